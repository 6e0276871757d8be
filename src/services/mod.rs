//! The services the `switchboard` binary runs, built on the public [`crate::Service`]
//! API exactly as a custom protocol would be.

mod echo;

pub use echo::Echo;
