//! The one seam through which secrets are fetched: the agent's KBS service implements it, tests substitute it.
pub trait ResourceSource: Send + Sync {
    fn get_resource(&self, uri: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::Error>;
}
