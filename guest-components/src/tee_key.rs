//! The TEE key: an EC P-256 key pair made in the guest, whose public half is sent to the
//! KBS (bound into the evidence) and to which the KBS encrypts resources.
//!
//! The private scalar never leaves this type; `p256::SecretKey` zeroizes it on drop.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::TeePubKey;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{PublicKey, SecretKey};

use crate::kbs::protocol::jose;

/// An EC P-256 key pair for `ECDH-ES+A256KW`.
pub struct TeeKey {
    secret: SecretKey,
    jwk: TeePubKey,
}

impl TeeKey {
    /// A fresh key pair from the OS random source.
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::random(&mut rand_core::OsRng))
    }

    pub(crate) fn from_secret(secret: SecretKey) -> Self {
        let jwk = public_jwk(&secret.public_key());
        Self { secret, jwk }
    }

    /// The public key as the JWK sent in `runtime-data.tee-pubkey`:
    /// `{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x","y"}`.
    pub fn jwk(&self) -> &TeePubKey {
        &self.jwk
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }
}

impl std::fmt::Debug for TeeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeKey")
            .field("jwk", &self.jwk)
            .finish_non_exhaustive()
    }
}

/// The JWK of a P-256 public key (base64url coordinates, 32 bytes each).
pub fn public_jwk(public: &PublicKey) -> TeePubKey {
    let point = public.to_encoded_point(false);
    let coord =
        |c: Option<&p256::FieldBytes>| c.map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default();
    TeePubKey::EC {
        crv: jose::CRV_P256.to_owned(),
        alg: jose::ALG_ECDH_ES_A256KW.to_owned(),
        x: coord(point.x()),
        y: coord(point.y()),
    }
}

/// The P-256 public key of an EC JWK (checks `kty`, `crv` and that the point is on the curve).
pub fn jwk_public_key(jwk: &TeePubKey) -> Result<PublicKey, String> {
    let TeePubKey::EC { crv, x, y, .. } = jwk else {
        return Err("not an EC key".to_owned());
    };
    public_key_from_coordinates(crv, x, y)
}

pub(crate) fn public_key_from_coordinates(
    crv: &str,
    x: &str,
    y: &str,
) -> Result<PublicKey, String> {
    if crv != jose::CRV_P256 {
        return Err(format!("curve {crv:?}, want {:?}", jose::CRV_P256));
    }
    let decode = |name: &str, v: &str| -> Result<p256::FieldBytes, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|e| format!("{name}: {e}"))?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("{name}: {} bytes, want 32", bytes.len()))?;
        Ok(p256::FieldBytes::from(arr))
    };
    let point =
        p256::EncodedPoint::from_affine_coordinates(&decode("x", x)?, &decode("y", y)?, false);
    Option::from(PublicKey::from_encoded_point(&point))
        .ok_or_else(|| "point not on P-256".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn jwk_shape_and_round_trip() {
        let key = TeeKey::generate();
        let v = serde_json::to_value(key.jwk()).unwrap();
        assert_eq!(v["kty"], "EC");
        assert_eq!(v["crv"], "P-256");
        assert_eq!(v["alg"], "ECDH-ES+A256KW");
        assert_eq!(v["x"].as_str().unwrap().len(), 43);
        assert_eq!(v["y"].as_str().unwrap().len(), 43);
        assert_eq!(v.as_object().unwrap().len(), 5);
        let public = jwk_public_key(key.jwk()).unwrap();
        assert_eq!(public, key.secret().public_key());
        // Two clients, two keys.
        assert_ne!(
            serde_json::to_string(TeeKey::generate().jwk()).unwrap(),
            serde_json::to_string(key.jwk()).unwrap()
        );
        // Debug never shows the private key.
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn bad_jwks() {
        assert!(public_key_from_coordinates("P-384", "AA", "AA").is_err());
        assert!(public_key_from_coordinates("P-256", "AA", "AA").is_err());
        let zero = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert!(public_key_from_coordinates("P-256", &zero, &zero).is_err());
    }
}
