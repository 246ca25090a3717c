//! Integration tests: every store behaviour against real Redis and the in-memory store, the
#![allow(unreachable_pub)]
//! layer through real teloxide dispatching, and the Bot API through a local fake server.

#[path = "../common/mod.rs"]
mod common;

mod support;

mod adoption;
mod architecture;
mod audit;
mod bad_input;
mod cluster;
mod commands;
mod dialogue_listing;
mod docs;
mod erasers;
mod faults;
mod gone;
mod layer;
mod metrics;
mod mock_bot;
mod model;
mod odd_data;
mod postgres_isolation;
mod postgres_store;
mod promises;
mod pruner;
mod receipts;
mod runtimes;
mod safety;
mod sentinel;
mod shards;
mod sql_adoption;
mod sqlite;
mod store;
mod survey;
mod tls;
