//! Test harness: builders for signed repositories and real git servers, used by `tests/tests/*.rs`.
