//! The attestation token: a JWT (`header.claims.signature`, base64url without padding)
//! signed ES256 with a key made at start-up, carrying `iat`, `exp` and the attested
//! `tee-pubkey` (a path Trustee's token verifier looks at). Verification checks the
//! signature and `exp` with a leeway, as `jsonwebtoken`'s `Validation` does for Trustee.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::OsRng;
use serde_json::{json, Value};

const HEADER: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not header.claims.signature")]
    Shape,
    #[error("token header is not ES256")]
    Header,
    #[error("token signature does not verify")]
    Signature,
    #[error("token claims are not JSON with a numeric exp")]
    Claims,
    #[error("token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired { exp: u64, now: u64, leeway: u64 },
}

pub struct TokenIssuer {
    key: SigningKey,
    ttl: u64,
    leeway: u64,
}

impl TokenIssuer {
    pub fn new(ttl: u64, leeway: u64) -> Self {
        Self {
            key: SigningKey::random(&mut OsRng),
            ttl,
            leeway,
        }
    }

    /// A token for `claims` (an object), with `iss`, `iat` and `exp` added.
    pub fn issue(&self, mut claims: Value, now: u64) -> String {
        if let Some(m) = claims.as_object_mut() {
            m.insert("iss".into(), json!("cocoon-test-kbs"));
            m.insert("iat".into(), json!(now));
            m.insert("exp".into(), json!(now.saturating_add(self.ttl)));
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// The claims of a token this issuer signed, if it has not expired.
    pub fn verify(&self, token: &str, now: u64) -> Result<Value, TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [h, c, s] = parts.as_slice() else {
            return Err(TokenError::Shape);
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Header)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Header);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(TokenError::Signature)?;
        VerifyingKey::from(&self.key)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Claims)?;
        let exp = claims["exp"].as_u64().ok_or(TokenError::Claims)?;
        if exp.saturating_add(self.leeway) < now {
            return Err(TokenError::Expired {
                exp,
                now,
                leeway: self.leeway,
            });
        }
        Ok(claims)
    }

    /// The verification key as a JWK (served at `/test/token-key`).
    pub fn public_jwk(&self) -> Value {
        let point = VerifyingKey::from(&self.key).to_encoded_point(false);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "x": point.x().map(|x| URL_SAFE_NO_PAD.encode(x)),
            "y": point.y().map(|y| URL_SAFE_NO_PAD.encode(y)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn issue_verify_expire() {
        let issuer = TokenIssuer::new(10, 5);
        let t = issuer.issue(json!({"tee": "sample"}), 1000);
        let claims = issuer.verify(&t, 1000).unwrap();
        assert_eq!(
            (claims["exp"].as_u64(), claims["tee"].as_str()),
            (Some(1010), Some("sample"))
        );
        assert!(issuer.verify(&t, 1015).is_ok(), "within leeway");
        assert_eq!(
            issuer.verify(&t, 1016),
            Err(TokenError::Expired {
                exp: 1010,
                now: 1016,
                leeway: 5
            })
        );
        let other = TokenIssuer::new(10, 5);
        assert_eq!(other.verify(&t, 1000), Err(TokenError::Signature));
        let mut forged: Vec<&str> = t.split('.').collect();
        let claims = URL_SAFE_NO_PAD.encode(r#"{"exp":99999}"#);
        forged[1] = &claims;
        assert_eq!(
            issuer.verify(&forged.join("."), 1000),
            Err(TokenError::Signature)
        );
        assert_eq!(issuer.verify("a.b", 1000), Err(TokenError::Shape));
    }
}
