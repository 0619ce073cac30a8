//! runlens's fleet history: the store's tables as Parquet files on object storage (a
//! directory, S3, GCS, Azure), in a hive-partitioned layout that DuckDB, Spark, ClickHouse,
//! Trino/Athena and BigQuery read natively ([`layout`]), written by `runlens export
//! parquet` and `serve --parquet-export` ([`mod@export`]) and read back by `runlens report
//! --from` ([`mod@import`]).
//!
//! The functions are blocking: each runs its object-store requests on a small runtime of
//! its own, so callers on an async runtime call them from a thread of their own.

pub mod arrow_columns;
pub mod export;
pub mod history;
pub mod import;
pub mod layout;
pub mod location;
pub mod sorted_runs;
pub mod sources;

pub use export::{TableExport, Written, export};
pub use import::{ReadBack, read_into};
pub use location::Location;
pub use sources::SourceNames;

/// What can go wrong writing or reading the files.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The destination URL cannot be used.
    #[error("{url}: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why not.
        why: String,
    },
    /// The object store refused or failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A Parquet file could not be written or read.
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow refused a batch.
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The files' snapshot ids are not in the order of their names (read them through a
    /// database instead).
    #[error("files out of order: {0}")]
    Order(String),
    /// A file does not follow the layout.
    #[error("not a runlens fleet file: {0}")]
    Format(String),
    /// The database.
    #[error(transparent)]
    Store(#[from] runlens_store::StoreError),
    /// A local file.
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = FleetError> = std::result::Result<T, E>;

/// Runs `future` to its end on a runtime of its own (one thread; object-store requests
/// are network-bound).
pub(crate) fn block_on<T, F: std::future::Future<Output = Result<T>>>(future: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}
