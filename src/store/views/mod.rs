//! View tables: the storage side of projections, on either backend.
//!
//! A projection describes its tables ([`Table`]); this module creates them, loads rows by
//! id, upserts and deletes rows in bulk, and runs read queries, inside one transaction
//! per batch so that a view change and its checkpoint commit together. Rows travel as
//! JSON (one parameter per statement, however many rows), so each projection's row is a
//! plain serde struct and no per-type SQL mapping exists.
//!
//! Tables are named `<projection>_g<generation>_<table>`: a rebuild fills a new
//! generation beside the one serving queries. That name is built at run time, which is
//! why these tables are created here and not in `migrations/`.
//!
//! Column types are deliberately few (text and 64-bit integers, times as fixed-width
//! RFC 3339 text) so that one SQL text serves both backends and ordering by time is
//! ordering by text.
//!
//! This module owns the description of a table ([`Table`]) and its physical name;
//! beside it, `tx` owns the transaction and every statement on view tables, `sql` the
//! read queries and the binding of parameters, [`fixed_time`] the time text, `csv`
//! the rows a rebuild COPYs, and [`nul`] what becomes of a NUL, which PostgreSQL's text
//! cannot hold, in any text written or bound here. None of them knows any projection.

mod csv;
pub mod fixed_time;
pub mod nul;
mod sql;
mod tx;

pub use sql::{query, select, Param};
pub use tx::Tx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    BigInt,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

/// A view table. Every table has a text primary key column `id`, listed first.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Secondary indexes, each a list of columns.
    pub indexes: &'static [&'static [&'static str]],
}

pub const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
    }
}

pub const fn bigint(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::BigInt,
    }
}

/// The physical name of `table` in generation `generation` of `projection`.
pub fn physical(projection: &str, generation: i64, table: &str) -> String {
    format!("{projection}_g{generation}_{table}")
}
