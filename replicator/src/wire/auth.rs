//! `cram-hmac-alg` challenge-response: each side proves it knows `shared-secret` by returning
//! HMAC(secret, peer's nonce || own node name); names stop a reflected answer from being reused.
//! The algorithm is one rep implements (`HmacAlg`, checked when the `.res` file is loaded).

use hmac::{Hmac, Mac};
use rep_resources::HmacAlg;

pub const NONCE_BYTES: usize = 32;

macro_rules! mac {
    ($d:ty, $secret:expr, $nonce:expr, $responder:expr) => {
        // HMAC takes keys of any length (RFC 2104 hashes long ones), so this never fails; an
        // empty answer would only fail the verification.
        match <Hmac<$d> as Mac>::new_from_slice($secret.as_bytes()) {
            Ok(mut m) => {
                m.update($nonce);
                m.update($responder.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    };
}

pub fn response(alg: HmacAlg, secret: &str, nonce: &[u8], responder: &str) -> Vec<u8> {
    match alg {
        HmacAlg::Sha1 => mac!(sha1::Sha1, secret, nonce, responder),
        HmacAlg::Sha256 => mac!(sha2::Sha256, secret, nonce, responder),
    }
}

/// Constant-time comparison, so timing does not leak how much of a guess was right.
pub fn verify(alg: HmacAlg, secret: &str, nonce: &[u8], responder: &str, got: &[u8]) -> bool {
    let want = response(alg, secret, nonce, responder);
    want.len() == got.len() && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_secret_verifies_wrong_secret_and_reflection_do_not() {
        let nonce = [7u8; NONCE_BYTES];
        let r = response(HmacAlg::Sha1, "s3cret", &nonce, "node-b");
        assert!(verify(HmacAlg::Sha1, "s3cret", &nonce, "node-b", &r));
        assert!(!verify(HmacAlg::Sha1, "wrong", &nonce, "node-b", &r));
        assert!(!verify(HmacAlg::Sha1, "s3cret", &nonce, "node-a", &r));
        assert!(!verify(HmacAlg::Sha256, "s3cret", &nonce, "node-b", &r));
        assert_eq!(response(HmacAlg::Sha256, "k", &nonce, "x").len(), 32);
    }
}
