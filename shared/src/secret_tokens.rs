//! Bearer secrets of the form `<prefix><id: 32 hex>_<secret: 64 hex>`:
//! producers' API keys (`sy_`) and operators' tokens (`syop_`). The id is
//! public and names the token; the database keeps only the SHA-256 of the
//! secret, compared in constant time. The full token is shown once.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// A freshly minted token.
#[derive(Clone)]
pub struct Minted {
    /// Its public id.
    pub id: Uuid,
    /// The SHA-256 of its secret, to store.
    pub secret_sha256: Vec<u8>,
    /// The whole token, to hand over once.
    pub token: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Minted")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A new token with `prefix`.
pub fn mint(prefix: &str) -> Minted {
    let id = Uuid::now_v7();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    Minted {
        id,
        secret_sha256: Sha256::digest(secret).to_vec(),
        token: format!("{prefix}{}_{}", id.simple(), hex::encode(secret)),
    }
}

/// Splits a presented token into its id and secret; `None` when it is not
/// shaped like a token with `prefix`.
pub fn parse(prefix: &str, presented: &str) -> Option<(Uuid, [u8; 32])> {
    let rest = presented.trim().strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() != 64 {
        return None;
    }
    let id = Uuid::try_parse(id).ok()?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(secret, &mut bytes).ok()?;
    Some((id, bytes))
}

/// Whether `secret` hashes to `stored_sha256` (constant time).
pub fn matches(secret: &[u8; 32], stored_sha256: &[u8]) -> bool {
    let presented = Sha256::digest(secret);
    presented[..].ct_eq(stored_sha256).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_shaped_tokens_parse_and_a_minted_one_matches_its_hash() {
        let minted = mint("sy_");
        let (id, secret) = parse("sy_", &minted.token).expect("parses");
        assert_eq!(id, minted.id);
        assert!(matches(&secret, &minted.secret_sha256));
        assert!(!matches(&[0; 32], &minted.secret_sha256));
        assert_eq!(parse("syop_", &minted.token), None, "another prefix");
        let id = Uuid::now_v7();
        for bad in [
            String::new(),
            "sy_".to_owned(),
            format!("xx_{}_{}", id.simple(), "ab".repeat(32)),
            format!("sy_{}_{}", id.simple(), "ab".repeat(31)),
            format!("sy_{}_{}", id.simple(), "zz".repeat(32)),
            format!("sy_{}{}", id.simple(), "ab".repeat(32)),
        ] {
            assert_eq!(parse("sy_", &bad), None, "{bad}");
        }
        assert!(!format!("{minted:?}").contains(&minted.token[4..]));
    }
}
