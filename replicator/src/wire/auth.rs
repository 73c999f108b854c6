//! `cram-hmac-alg` challenge-response: each side proves it knows `shared-secret` by returning
//! HMAC(secret, peer's nonce || own node name); names stop a reflected answer from being reused.

use hmac::{Hmac, Mac};

pub const NONCE_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("cram-hmac-alg '{0}' is not supported by rep (use sha1 or sha256)")]
    UnsupportedAlg(String),
}

fn normalize(alg: &str) -> String {
    alg.to_ascii_lowercase().replace(['-', '_'], "")
}

pub fn check_alg(alg: &str) -> Result<(), AuthError> {
    match normalize(alg).as_str() {
        "sha1" | "hmac(sha1)" | "sha256" | "hmac(sha256)" => Ok(()),
        _ => Err(AuthError::UnsupportedAlg(alg.to_owned())),
    }
}

pub fn response(
    alg: &str,
    secret: &str,
    nonce: &[u8],
    responder: &str,
) -> Result<Vec<u8>, AuthError> {
    macro_rules! mac {
        ($d:ty) => {{
            // HMAC accepts keys of any length, so new_from_slice cannot fail here.
            let mut m = <Hmac<$d> as Mac>::new_from_slice(secret.as_bytes())
                .map_err(|_| AuthError::UnsupportedAlg(alg.to_owned()))?;
            m.update(nonce);
            m.update(responder.as_bytes());
            Ok(m.finalize().into_bytes().to_vec())
        }};
    }
    match normalize(alg).as_str() {
        "sha1" | "hmac(sha1)" => mac!(sha1::Sha1),
        "sha256" | "hmac(sha256)" => mac!(sha2::Sha256),
        _ => Err(AuthError::UnsupportedAlg(alg.to_owned())),
    }
}

/// Constant-time comparison, so timing does not leak how much of a guess was right.
pub fn verify(alg: &str, secret: &str, nonce: &[u8], responder: &str, got: &[u8]) -> bool {
    match response(alg, secret, nonce, responder) {
        Ok(want) => {
            want.len() == got.len()
                && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_secret_verifies_wrong_secret_and_reflection_do_not() {
        let nonce = [7u8; NONCE_BYTES];
        let r = response("sha1", "s3cret", &nonce, "node-b").unwrap();
        assert!(verify("sha1", "s3cret", &nonce, "node-b", &r));
        assert!(!verify("sha1", "wrong", &nonce, "node-b", &r));
        assert!(!verify("sha1", "s3cret", &nonce, "node-a", &r));
        assert_eq!(response("sha256", "k", &nonce, "x").unwrap().len(), 32);
        assert!(check_alg("md4").is_err());
    }
}
