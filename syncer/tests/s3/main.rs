//! `ksd-syncer` against an S3 server (moto behind the testbed's counting proxy), one module
//! per concern: merging, rejections, outages and confirmation of deletions, idle behaviour,
//! the output against the schemas, and the command line (`--once`, `--dry-run`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod idle;
mod merge;
mod outages;
mod rejections;
mod schema;
