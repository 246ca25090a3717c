//! Integration tests: the store behaviours on every store (memory, real Redis, sharded
//! Redis, SQLite, PostgreSQL; `every_store!` in `common/mod.rs`), Redis's own faults against
//! real servers, the layer through real teloxide dispatching, and the Bot API through a
//! local fake server.
#![allow(unreachable_pub)]

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
mod probes;
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
