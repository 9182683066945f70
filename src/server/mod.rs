//! The shell: HTTP routes over TLS, and the admin port.

pub mod routes;
