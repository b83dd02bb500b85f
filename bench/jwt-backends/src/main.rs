//! Signs one RS256 token with a 2048-bit key (BENCH_KEY_PEM: PKCS#1 or PKCS#8 PEM; its public
//! half in BENCH_PUB_PEM) and verifies it over and over on one thread, printing the median of
//! seven batches in microseconds per verification.
use std::time::Instant;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let private = std::fs::read(std::env::var("BENCH_KEY_PEM")?)?;
    let public = std::fs::read(std::env::var("BENCH_PUB_PEM")?)?;
    let claims = serde_json::json!({"sub": "bench-user", "exp": 4_102_444_800u64, "iss": "bench"});
    let token = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&private)?,
    )?;
    let key = DecodingKey::from_rsa_pem(&public)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["bench"]);
    let batch = 2_000;
    let mut per_verify = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        for _ in 0..batch {
            decode::<serde_json::Value>(&token, &key, &validation)?;
        }
        per_verify.push(started.elapsed().as_secs_f64() * 1e6 / batch as f64);
    }
    per_verify.sort_by(f64::total_cmp);
    println!("rs256_verify_us={:.1}", per_verify[3]);
    Ok(())
}
