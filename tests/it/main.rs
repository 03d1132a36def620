//! The integration tests of actionhub: one binary, each test starting real hubs and
//! talking to them over real sockets.

mod restart;
