//! Shared by the two binaries of the kettle test workspace.

/// Returns the greeting for `name`; panics (with this file's path in the
/// message) on an empty name, so the binaries embed a source path.
pub fn greeting(word: &str, name: &str) -> String {
    assert!(!name.is_empty(), "empty name");
    format!("{word}, {name}!")
}
