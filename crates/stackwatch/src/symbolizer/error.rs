//! [`SymbolError`]: why a module's files gave no names. Below the ELF and DWARF readers,
//! which return it, and the symbolizer, which logs it.

/// Why a file gave no names (logged at debug level; the frame then shows the module).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SymbolError {
    /// Reading the file failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    /// Not an ELF file.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF variant or section encoding not read here.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The file ends inside a structure.
    #[error("truncated")]
    Truncated,
    /// A section larger than this reader accepts whole.
    #[error("section too large to read whole")]
    TooLarge,
    /// Malformed DWARF.
    #[error("DWARF: {0}")]
    Dwarf(String),
}
