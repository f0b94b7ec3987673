//! The Cocoon agent binary.
fn main() {}
