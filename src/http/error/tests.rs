//! The table's rows as clients see them.

use super::*;

#[test]
fn every_gone_status_has_its_own_code() {
    let gone = |status| ApiError::TokenGone {
        status,
        reason: None,
    };
    assert_eq!(
        gone(Status::Revoked).answer().code.as_str(),
        "token_revoked"
    );
    assert_eq!(
        gone(Status::Expired).answer().code.as_str(),
        "token_expired"
    );
    assert_eq!(gone(Status::Failed).answer().code.as_str(), "token_failed");
    assert_eq!(gone(Status::Failed).answer().status, StatusCode::GONE);
}

#[test]
fn internal_errors_say_nothing_of_their_cause() {
    let error = ApiError::internal("reading a row", "table token_vault on db.internal:5432");
    assert_eq!(error.answer().message, "Internal server error");
    assert_eq!(error.answer().status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn waits_are_whole_seconds_and_at_least_one() {
    let response = ApiError::ProviderUnavailable {
        retry_after: Duration::from_millis(1500),
    }
    .into_response();
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    let response = ApiError::RateLimited {
        retry_after: Duration::ZERO,
    }
    .into_response();
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
}
