#![no_std]
// The programs live in main.rs (the `muppy` binary that aya-build links); this library target
// only lets muppy-user name this crate as a build dependency.
