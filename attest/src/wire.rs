//! Gramine's secret-provisioning wire protocol (spec §6.2) and our extension.
//!
//! After the TLS handshake:
//! 1. client → server: [`REQUEST`] (`SECRET_PROVISION_RA_TLS_REQUEST_V1` + NUL, 35 bytes);
//! 2. server → client: [`RESPONSE`] (`SECRET_PROVISION_RA_TLS_RESPONSE_V1:` + NUL, 37 bytes),
//!    the secret length as a big-endian u32, then the secret.
//!
//! Extension (sent only by our client, after step 2; a stock Gramine client
//! never sends it, so it never sees a reply):
//! * client → server: [`KEY_REQUEST`] (`ATTEST_KEY_REQUEST_V1:` + NUL, 23 bytes),
//!   a big-endian u32 name length (1..=[`MAX_KEY_NAME_LEN`]) and the UTF-8 key name;
//! * server → client: either [`RESPONSE`] + u32 length + key, or
//!   [`KEY_DENIED`] (`ATTEST_KEY_DENIED_V1:` + NUL, 22 bytes) + u32 length + UTF-8 reason.
//!
//! Either side ends the session with TLS close_notify.

/// The client's request, including the terminating NUL (35 bytes).
pub const REQUEST: &[u8; 35] = b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0";
/// The server's response prefix, including the terminating NUL (37 bytes).
pub const RESPONSE: &[u8; 37] = b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0";
/// Extension: request a further named key (23 bytes).
pub const KEY_REQUEST: &[u8; 23] = b"ATTEST_KEY_REQUEST_V1:\0";
/// Extension: a key request was denied (22 bytes).
pub const KEY_DENIED: &[u8; 22] = b"ATTEST_KEY_DENIED_V1:\0";
/// Longest key name accepted in an extension request (bytes).
pub const MAX_KEY_NAME_LEN: u32 = 255;
/// Longest secret or denial reason a client accepts (bytes), as Gramine's 4096-byte secret limit.
pub const MAX_SECRET_LEN: u32 = 4096;

/// Encodes a secret response: [`RESPONSE`] ‖ u32 BE length ‖ secret.
pub fn encode_response(secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESPONSE.len() + 4 + secret.len());
    out.extend_from_slice(RESPONSE);
    out.extend_from_slice(&(secret.len() as u32).to_be_bytes());
    out.extend_from_slice(secret);
    out
}

/// Encodes a denial: [`KEY_DENIED`] ‖ u32 BE length ‖ reason.
pub fn encode_denied(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_DENIED.len() + 4 + reason.len());
    out.extend_from_slice(KEY_DENIED);
    out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// Encodes an extension key request.
pub fn encode_key_request(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_REQUEST.len() + 4 + name.len());
    out.extend_from_slice(KEY_REQUEST);
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_the_spec() {
        assert_eq!(REQUEST.len(), 35);
        assert_eq!(RESPONSE.len(), 37);
        assert_eq!(encode_response(&[7u8; 16]).len(), 41 + 16);
        assert_eq!(&encode_response(&[7u8; 16])[37..41], &[0, 0, 0, 16]);
    }
}
