//! The services the `switchboard` binary runs, built on the public [`crate::Service`]
//! API exactly as a custom protocol would be.

#[cfg(feature = "chat")]
pub mod chat;
mod echo;

pub use echo::Echo;
