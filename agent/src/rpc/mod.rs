//! ttrpc handlers: one module per service. Every request flows request → check →
//! action → response; errors carry a ttrpc code and say which field was wrong.

pub mod agent;
pub mod health;

use ttrpc::{Code, Error};

/// A ttrpc error status with `code` and `message`.
pub fn status(code: Code, message: impl ToString) -> Error {
    Error::RpcStatus(ttrpc::get_status(code, message))
}
