//! The CLI's `config.yaml`: settings and the signed-in user's tokens, every token value
//! encrypted as `secure://…`.
//!
//! Opening it takes an exclusive lock on `config.yaml.lock`, so two CLI processes refreshing at
//! once queue up instead of both spending the same rotated refresh token. Writes go to a
//! temporary file (0600) that is renamed over the old one: a crash leaves the old file or the
//! new one, never half of each.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::secrets::{is_encrypted, SecretsError, SecretsKey};

pub const KEY_ENV: &str = "TOKEN_BROKER_SECRETS_KEY";
pub const KEY_FILE_ENV: &str = "TOKEN_BROKER_SECRETS_KEY_FILE";

/// Which login a session came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Device authorization grant: a person signed in.
    Device,
    /// Client credentials: a service account.
    Client,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Device => "device-token",
            Kind::Client => "client-token",
        }
    }
}

/// Decrypted tokens of one login.
#[derive(Clone, Debug)]
pub struct Session {
    pub client_id: String,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// Client credentials need the secret again for the next token.
    pub client_secret: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    broker_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secrets_encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_token: Option<StoredToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_token: Option<StoredToken>,
    /// Keys we do not know are kept as they are.
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct StoredToken {
    client_id: String,
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

impl StoredToken {
    /// (field name, value) of every secret in it.
    fn secrets(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("access-token", Some(&self.access_token)),
            ("refresh-token", self.refresh_token.as_ref()),
            ("client-secret", self.client_secret.as_ref()),
        ]
    }

    /// (field name, value) of every secret in it.
    fn secrets_mut(&mut self) -> [(&'static str, Option<&mut String>); 3] {
        [
            ("access-token", Some(&mut self.access_token)),
            ("refresh-token", self.refresh_token.as_mut()),
            ("client-secret", self.client_secret.as_mut()),
        ]
    }
}

/// The default location: `$TOKEN_BROKER_CONFIG`, else `<user config dir>/token-broker/config.yaml`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TOKEN_BROKER_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    dirs::config_dir()
        .map(|dir| dir.join("token-broker").join("config.yaml"))
        .context("no user config directory; set TOKEN_BROKER_CONFIG")
}

/// `config.yaml`, open and locked until dropped.
pub struct LockedConfig {
    path: PathBuf,
    model: FileModel,
    key: SecretsKey,
    _lock: File,
}

impl LockedConfig {
    /// Locks and reads the file (an absent file is an empty config). Plain-text token values
    /// found in it are encrypted and written back at once.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let lock = lock_file(path)?;
        let mut model = read_model(path)?;
        let (key, created) = resolve_key(&mut model)?;
        // Before anything is migrated or written: a key that cannot open what the file already
        // holds would leave it with values under two keys.
        check_key_opens_all(&model, &key)?;
        let mut config = Self {
            path: path.to_owned(),
            model,
            key,
            _lock: lock,
        };
        let migrated = config.encrypt_plain_values()?;
        if created || migrated {
            config.save()?;
        }
        Ok(config)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `logout`: removes every stored login and keeps the rest of the file, without needing
    /// the secrets key (a lost or wrong key is exactly when a user needs this). Returns whether
    /// there was anything to remove.
    pub fn forget_sessions(path: &Path) -> anyhow::Result<bool> {
        let lock = lock_file(path)?;
        let mut model = read_model(path)?;
        let had = model.device_token.take().is_some() | model.client_token.take().is_some();
        if had {
            write_model(path, &model)?;
        }
        drop(lock);
        Ok(had)
    }

    pub fn issuer(&self) -> Option<&str> {
        self.model.issuer.as_deref()
    }

    pub fn set_issuer(&mut self, issuer: &str) {
        self.model.issuer = Some(issuer.to_owned());
    }

    pub fn broker_url(&self) -> Option<&str> {
        self.model.broker_url.as_deref()
    }

    pub fn session(&self, kind: Kind) -> Result<Option<Session>, SecretsError> {
        let Some(stored) = self.stored(kind) else {
            return Ok(None);
        };
        let field = |name: &str| format!("{}.{name}", kind.field());
        let open = |name: &str, value: &String| self.key.decrypt(&field(name), value);
        Ok(Some(Session {
            client_id: stored.client_id.clone(),
            access_token: open("access-token", &stored.access_token)?,
            refresh_token: stored
                .refresh_token
                .as_ref()
                .map(|v| open("refresh-token", v))
                .transpose()?,
            client_secret: stored
                .client_secret
                .as_ref()
                .map(|v| open("client-secret", v))
                .transpose()?,
            expires_at: stored.expires_at,
            scope: stored.scope.clone(),
        }))
    }

    pub fn set_session(&mut self, kind: Kind, session: &Session) -> Result<(), SecretsError> {
        let field = |name: &str| format!("{}.{name}", kind.field());
        let seal = |name: &str, value: &SecretString| {
            self.key.encrypt(&field(name), value.expose_secret())
        };
        let stored = StoredToken {
            client_id: session.client_id.clone(),
            access_token: seal("access-token", &session.access_token)?,
            refresh_token: session
                .refresh_token
                .as_ref()
                .map(|v| seal("refresh-token", v))
                .transpose()?,
            client_secret: session
                .client_secret
                .as_ref()
                .map(|v| seal("client-secret", v))
                .transpose()?,
            expires_at: session.expires_at,
            scope: session.scope.clone(),
        };
        *self.stored_mut(kind) = Some(stored);
        Ok(())
    }

    /// Writes the whole file atomically: a 0600 temporary file in the same directory, synced,
    /// then renamed over the old one.
    pub fn save(&self) -> anyhow::Result<()> {
        write_model(&self.path, &self.model)
    }

    fn stored(&self, kind: Kind) -> Option<&StoredToken> {
        match kind {
            Kind::Device => self.model.device_token.as_ref(),
            Kind::Client => self.model.client_token.as_ref(),
        }
    }

    fn stored_mut(&mut self, kind: Kind) -> &mut Option<StoredToken> {
        match kind {
            Kind::Device => &mut self.model.device_token,
            Kind::Client => &mut self.model.client_token,
        }
    }

    /// Encrypts token values an older version (or a person) left in plain text.
    fn encrypt_plain_values(&mut self) -> Result<bool, SecretsError> {
        let mut migrated = false;
        for kind in [Kind::Device, Kind::Client] {
            let key = &self.key;
            let stored = match kind {
                Kind::Device => self.model.device_token.as_mut(),
                Kind::Client => self.model.client_token.as_mut(),
            };
            let Some(stored) = stored else { continue };
            for (name, value) in stored.secrets_mut() {
                if let Some(value) = value.filter(|v| !is_encrypted(v)) {
                    *value = key.encrypt(&format!("{}.{name}", kind.field()), value)?;
                    migrated = true;
                }
            }
        }
        Ok(migrated)
    }
}

/// The secrets key: `TOKEN_BROKER_SECRETS_KEY`, else the file named by
/// `TOKEN_BROKER_SECRETS_KEY_FILE`, else `secrets-encryption` in the file. A new key is made
/// only when nothing encrypted exists yet: a new key could never open old values, so replacing
/// a lost one silently would only hide the loss.
fn resolve_key(model: &mut FileModel) -> anyhow::Result<(SecretsKey, bool)> {
    if let Ok(value) = std::env::var(KEY_ENV) {
        let key = SecretsKey::parse(&value)
            .with_context(|| format!("{KEY_ENV} is not base64 of 32 bytes"))?;
        return Ok((key, false));
    }
    if let Some(path) = std::env::var_os(KEY_FILE_ENV) {
        let text = zeroize::Zeroizing::new(fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {KEY_FILE_ENV} ({})",
                Path::new(&path).display()
            )
        })?);
        let key = SecretsKey::parse(&text).with_context(|| {
            format!("{KEY_FILE_ENV}: the file does not hold base64 of 32 bytes")
        })?;
        return Ok((key, false));
    }
    if let Some(value) = &model.secrets_encryption {
        let key = SecretsKey::parse(value)
            .context("secrets-encryption in the config file is not base64 of 32 bytes")?;
        return Ok((key, false));
    }
    if holds_encrypted_values(model) {
        bail!(
            "the config file holds encrypted tokens but no key: set {KEY_ENV} (or \
             {KEY_FILE_ENV}), or run `token-broker logout` (it needs no key) and sign in again"
        );
    }
    let (key, encoded) = SecretsKey::generate();
    model.secrets_encryption = Some(encoded.to_string());
    Ok((key, true))
}

/// Takes the exclusive lock on `config.yaml.lock` (creating the directory, 0700, if needed).
fn lock_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::config::create_private_dir(dir).map_err(anyhow::Error::msg)?;
    }
    let lock_path = path.with_extension("yaml.lock");
    let lock = private_options(OpenOptions::new().create(true).truncate(false).write(true))
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    Ok(lock)
}

/// The file's contents; an absent file is an empty config.
fn read_model(path: &Path) -> anyhow::Result<FileModel> {
    match fs::read_to_string(path) {
        Ok(text) => serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not a valid config file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileModel::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the whole file atomically: a 0600 temporary file in the same directory, synced,
/// then renamed over the old one.
fn write_model(path: &Path, model: &FileModel) -> anyhow::Result<()> {
    let text = serde_yaml_ng::to_string(model).context("cannot serialise the config")?;
    let temp = path.with_extension(format!("yaml.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = private_options(OpenOptions::new().create(true).truncate(true).write(true))
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Fails, naming the first value, when `key` cannot open an encrypted value in the file.
fn check_key_opens_all(model: &FileModel, key: &SecretsKey) -> Result<(), SecretsError> {
    for kind in [Kind::Device, Kind::Client] {
        let stored = match kind {
            Kind::Device => model.device_token.as_ref(),
            Kind::Client => model.client_token.as_ref(),
        };
        let Some(stored) = stored else { continue };
        for (name, value) in stored.secrets() {
            if let Some(value) = value.filter(|v| is_encrypted(v)) {
                key.decrypt(&format!("{}.{name}", kind.field()), value)?;
            }
        }
    }
    Ok(())
}

fn holds_encrypted_values(model: &FileModel) -> bool {
    [&model.device_token, &model.client_token]
        .into_iter()
        .flatten()
        .any(|t| {
            t.secrets()
                .into_iter()
                .any(|(_, v)| v.is_some_and(|v| is_encrypted(v)))
        })
}

fn private_options(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}
