//! The audit log's guarantees, tried as an attacker on the node would: edit,
//! delete, insert, reorder or truncate records, re-sign a forged log, and crash
//! the writer mid-record.

mod support;
mod tamper;
mod writer;
