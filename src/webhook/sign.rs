//! The webhook's signature: `X-Chat-Signature: sha256=<hex HMAC-SHA256 of
//! the body, keyed with CHAT_WEBHOOK_SECRET>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `X-Chat-Signature` header's name.
pub const SIGNATURE_HEADER: &str = "x-chat-signature";
/// The `X-Chat-Seq` header's name (`FIRST-LAST`).
pub const SEQ_HEADER: &str = "x-chat-seq";

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
