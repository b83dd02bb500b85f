//! A development encryption key kept in the data directory, so `serve --dev` works with nothing
//! configured. Never used unless dev mode is on: in production a missing key is an error,
//! because a key generated on the fly would silently orphan every sealed token if it were lost.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::crypto::Keyring;

const FILE_NAME: &str = "dev-encryption-key";
const KEY_ID: &str = "dev";

pub struct DevKey {
    pub keyring: Keyring,
    pub path: PathBuf,
    pub created: bool,
}

/// Reads the development key from `data_dir`, creating it (0600, directory 0700) on first use.
pub fn load_or_create(data_dir: &Path) -> Result<DevKey, String> {
    let path = data_dir.join(FILE_NAME);
    let created = !path.exists();
    if created {
        create_private_dir(data_dir)?;
        let entry = Keyring::generate_entry(KEY_ID).map_err(|e| e.to_string())?;
        let mut file =
            private_file(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        file.write_all(format!("{}\n", entry.as_str()).as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let text = zeroize::Zeroizing::new(
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let keyring = Keyring::parse(text.trim())
        .map_err(|e| format!("{} is not a valid key file: {e}", path.display()))?;
    Ok(DevKey {
        keyring,
        path,
        created,
    })
}

/// Creates the data directory readable by its owner only.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_with_owner_only_permissions() {
        let dir = std::env::temp_dir().join(format!("tb-devkey-{}", uuid::Uuid::new_v4()));
        let first = load_or_create(&dir).unwrap();
        assert!(first.created);
        let second = load_or_create(&dir).unwrap();
        assert!(!second.created);
        assert_eq!(
            first.keyring.sealing_key_id(),
            second.keyring.sealing_key_id()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_key_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("tb-devkey-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), "garbage").unwrap();
        let err = load_or_create(&dir).err().unwrap();
        assert!(err.contains("not a valid key file"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
