//! The dashboard's flags and its access policy.
//!
//! The dashboard shows internal addresses and state, so it belongs to the operator: it is on by
//! default only where the front-end listens on a loopback address (as under `bazaar up`), and
//! off on any other address unless asked for. When it is off its routes do not exist.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `--dashboard`: when to serve the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DashboardMode {
    /// Only when the front-end listens on a loopback address.
    #[default]
    Auto,
    /// Always, on any address.
    #[value(alias = "true", alias = "yes", alias = "1")]
    On,
    /// Never.
    #[value(alias = "false", alias = "no", alias = "0")]
    Off,
}

impl DashboardMode {
    /// Whether the dashboard is served by a front-end bound to `local`. A wildcard address
    /// (`0.0.0.0`, `::`) is not loopback: it accepts connections from every interface.
    #[must_use]
    pub fn serves_on(self, local: SocketAddr) -> bool {
        match self {
            Self::Auto => local.ip().is_loopback(),
            Self::On => true,
            Self::Off => false,
        }
    }
}

/// The dashboard's flags, flattened into the front-end's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DashboardConfig {
    /// Serve the operator's dashboard at `/`: `auto` serves it only when the front-end listens
    /// on a loopback address, `on` (or `--dashboard` alone) on any address, `off` never.
    #[arg(
        long = "dashboard",
        env = "BAZAAR_DASHBOARD",
        value_enum,
        default_value = "auto",
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub mode: DashboardMode,

    /// File naming the control endpoint of `bazaar up --demo`, which lets the dashboard stop and
    /// restart services. `bazaar up --demo` writes it and passes this flag; without it the
    /// dashboard has no demonstration controls.
    #[arg(long, env = "BAZAAR_DEMO_CONTROL_FILE")]
    pub demo_control_file: Option<PathBuf>,
}

impl DashboardConfig {
    /// Checks what clap cannot, for a front-end bound to `local`.
    ///
    /// # Errors
    /// A sentence naming the flag: demonstration controls without the dashboard.
    pub fn validate(&self, local: SocketAddr) -> Result<(), String> {
        if let Some(file) = &self.demo_control_file
            && !self.mode.serves_on(local)
        {
            return Err(format!(
                "--demo-control-file {} needs the dashboard, which is off on {local} (add --dashboard)",
                file.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn auto_serves_on_loopback_only() {
        for local in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080"] {
            assert!(DashboardMode::Auto.serves_on(addr(local)), "{local}");
        }
        for local in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.5:8080",
            "192.168.1.2:80",
        ] {
            assert!(!DashboardMode::Auto.serves_on(addr(local)), "{local}");
        }
    }

    #[test]
    fn on_and_off_ignore_the_address() {
        assert!(DashboardMode::On.serves_on(addr("0.0.0.0:8080")));
        assert!(!DashboardMode::Off.serves_on(addr("127.0.0.1:8080")));
    }

    #[test]
    fn demo_controls_need_the_dashboard() {
        let config = DashboardConfig {
            mode: DashboardMode::Auto,
            demo_control_file: Some("demo.json".into()),
        };
        assert!(config.validate(addr("127.0.0.1:8080")).is_ok());
        let refused = config
            .validate(addr("0.0.0.0:8080"))
            .expect_err("off loopback without --dashboard");
        assert!(refused.contains("--dashboard"), "{refused}");
        let on = DashboardConfig {
            mode: DashboardMode::On,
            ..config
        };
        assert!(on.validate(addr("0.0.0.0:8080")).is_ok());
    }
}
