//! SQL written once for both backends. Statements use PostgreSQL's `$n` placeholders; the
//! SQLite backend reads them through [`sqlite`], which turns them into its `?n`. Each shared
//! statement is prepared as text once per backend ([`statement!`]), not on every call.

use std::borrow::Cow;

/// A statement as PostgreSQL takes it: unchanged.
pub(crate) fn postgres(sql: impl Into<Cow<'static, str>>) -> Cow<'static, str> {
    sql.into()
}

/// A statement as SQLite takes it: `$n` placeholders become numbered `?n` parameters.
pub(crate) fn sqlite(sql: impl Into<Cow<'static, str>>) -> Cow<'static, str> {
    let sql = sql.into();
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The text of a shared statement in one backend's dialect (`postgres` or `sqlite` above),
/// built on first use and kept: each expansion of a shared implementation has its own.
macro_rules! statement {
    ($dialect:path, $text:expr) => {{
        static STATEMENT: ::std::sync::OnceLock<::std::borrow::Cow<'static, str>> =
            ::std::sync::OnceLock::new();
        STATEMENT.get_or_init(|| $dialect($text)).as_ref()
    }};
}

/// Every secret a row can hold, set to null: a row that ends keeps none of them.
macro_rules! wipe_secrets {
    () => {
        "encrypted_token = null, iv = null, key_id = null, access_token = null, \
         access_token_expires_at = null, access_token_type = null, access_token_scope = null, \
         state_hash = null, pkce_verifier = null, nonce_hash = null"
    };
}

pub(crate) use {statement, wipe_secrets};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_parameters() {
        assert_eq!(
            sqlite("where a = $1 and b > $12 and c = '$x'"),
            "where a = ?1 and b > ?12 and c = '$x'"
        );
    }

    #[test]
    fn postgres_statements_are_borrowed_as_written() {
        assert!(matches!(
            postgres("select $1"),
            std::borrow::Cow::Borrowed("select $1")
        ));
    }
}
