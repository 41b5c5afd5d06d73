//! The integration test binary: test support modules and the tests that use them.

mod corpus;
mod h1;
mod selftest;
mod upstream;
mod zipgen;
