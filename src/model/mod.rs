//! Models the server knows: their cards (what the input looks like and how to attack it) and the
//! repository that finds them on disk.

pub mod archive;
mod card;
mod catalog;
mod repository;

pub use archive::{check_archive, ArchiveLimits, ArchiveSummary, ReadAt};
pub use card::{InputSpec, ModelCard, Normalization, Task};
pub use catalog::{Catalog, Origin};
pub use repository::{ModelEntry, Repository, RepositoryError};
