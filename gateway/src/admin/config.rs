//! The `[admin]` section.

use std::net::SocketAddr;

use serde::Deserialize;

/// The admin listener: Prometheus metrics and the JSON API the CLI uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Start the listener.
    pub enabled: bool,
    /// Plain HTTP address. Anything but loopback requires `token`.
    pub listen: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer ...`).
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8089)),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Checks the section; returns the key (relative to `admin.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(t) = &self.token
            && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err((
                "token",
                "must be at least 16 characters, without spaces".into(),
            ));
        }
        if self.enabled && !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err((
                "listen",
                format!(
                    "{} is not a loopback address: set admin.token so the API is not open to the network",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn non_loopback_needs_a_token() {
        let err = Config::parse("[admin]\nlisten = \"0.0.0.0:8089\"\n", "c.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`admin.listen`"), "{msg}");
        assert!(msg.contains("admin.token"), "{msg}");
        assert!(msg.contains("c.toml:2"), "{msg}");
        Config::parse(
            "[admin]\nlisten = \"0.0.0.0:8089\"\ntoken = \"0123456789abcdef\"\n",
            "c.toml",
        )
        .unwrap();
        Config::parse("[admin]\nlisten = \"[::1]:8089\"\n", "c.toml").unwrap();
    }

    #[test]
    fn short_token_is_refused() {
        let err = Config::parse("[admin]\ntoken = \"abc\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("`admin.token`"), "{err}");
    }
}
