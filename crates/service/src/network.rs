//! The network face of a service, as one set of flags every service flattens: the cluster key
//! and TLS ([`crate::security`]) and the listener's limits ([`crate::limits`]).

use bazaar_api::auth::ClientAuth;

use crate::limits::LimitArgs;
use crate::security::{Access, Security, SecurityArgs};
use crate::serve::Listening;

/// Flags every service has.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetworkArgs {
    /// Credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Listener limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// [`NetworkArgs`], checked and loaded.
#[derive(Debug, Clone)]
pub struct Network {
    /// Key and TLS material.
    pub security: Security,
    /// How the listener serves.
    pub listening: Listening,
}

impl NetworkArgs {
    /// No key, no TLS, default limits: for in-process tests and `--insecure` set-ups.
    #[must_use]
    pub fn insecure() -> Self {
        Self {
            security: SecurityArgs::insecure(),
            limits: LimitArgs::default(),
        }
    }

    /// Reads the key and TLS files and checks the limits.
    ///
    /// # Errors
    /// One line naming the flag and what is wrong.
    pub fn resolve(&self) -> Result<Network, String> {
        let security = self.security.resolve()?;
        let limits = self.limits.resolve()?;
        Ok(Network {
            listening: Listening {
                tls: security.server_tls.clone(),
                limits,
            },
            security,
        })
    }
}

impl Network {
    /// Who may call a back-end service (catalog, order replica): holders of the key.
    #[must_use]
    pub fn backend_access(&self) -> Access {
        Access::backend(&self.security)
    }

    /// What this service presents and trusts when it calls others.
    #[must_use]
    pub fn client(&self) -> &ClientAuth {
        &self.security.client
    }
}
