//! The tray as data: which entries it shows for the running tunnels and the
//! session, their ids and labels, and what a click on each does. The shell
//! (`src-tauri`) only maps [`TrayMenu`] to its menu API and hands clicks
//! back to [`crate::App::tray_click`], so all of this is tested without a
//! desktop or D-Bus.

use crate::views::TunnelView;

/// Which tray icon to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icon {
    /// No tunnel is running.
    Idle,
    /// At least one tunnel is running.
    Active,
}

/// What a tunnel's submenu offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelAction {
    /// Copy the connection URI.
    CopyUri,
    /// Copy the psql command.
    CopyPsql,
    /// Add the tunnel to pgAdmin and start it.
    OpenPgAdmin,
    /// Stop the tunnel.
    Stop,
}

impl TunnelAction {
    /// Every action a running tunnel offers, in menu order.
    pub const RUNNING: [TunnelAction; 4] = [
        TunnelAction::CopyUri,
        TunnelAction::CopyPsql,
        TunnelAction::OpenPgAdmin,
        TunnelAction::Stop,
    ];

    fn key(self) -> &'static str {
        match self {
            TunnelAction::CopyUri => "uri",
            TunnelAction::CopyPsql => "psql",
            TunnelAction::OpenPgAdmin => "pgadmin",
            TunnelAction::Stop => "stop",
        }
    }

    fn label(self) -> &'static str {
        match self {
            TunnelAction::CopyUri => "Copy connection URI",
            TunnelAction::CopyPsql => "Copy psql command",
            TunnelAction::OpenPgAdmin => "Open in pgAdmin",
            TunnelAction::Stop => "Stop tunnel",
        }
    }
}

/// A clickable tray entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayAction {
    /// Show the window (creating it when closed).
    Open,
    /// Sign out of the current profile.
    SignOut,
    /// Stop every tunnel and exit.
    Quit,
    /// An action on one tunnel.
    Tunnel {
        /// The tunnel's id.
        id: u32,
        /// What to do.
        action: TunnelAction,
    },
}

impl TrayAction {
    /// The menu entry's id, as the shell registers it.
    pub fn id(&self) -> String {
        match self {
            TrayAction::Open => "open".into(),
            TrayAction::SignOut => "signout".into(),
            TrayAction::Quit => "quit".into(),
            TrayAction::Tunnel { id, action } => format!("t:{id}:{}", action.key()),
        }
    }

    /// The action of a clicked entry's id; `None` for entries that do nothing.
    pub fn parse(id: &str) -> Option<Self> {
        match id {
            "open" => return Some(TrayAction::Open),
            "signout" => return Some(TrayAction::SignOut),
            "quit" => return Some(TrayAction::Quit),
            _ => {}
        }
        let mut parts = id.split(':');
        let (Some("t"), Some(tunnel), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let action = TunnelAction::RUNNING.into_iter().find(|a| a.key() == key)?;
        Some(TrayAction::Tunnel {
            id: tunnel.parse().ok()?,
            action,
        })
    }
}

/// One entry of the tray menu.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrayItem {
    /// A line that can be clicked (when enabled).
    Action {
        /// What a click does.
        action: TrayAction,
        /// The text shown.
        label: String,
        /// Whether it can be clicked now.
        enabled: bool,
    },
    /// A line that only informs.
    Info {
        /// The entry's id.
        id: String,
        /// The text shown.
        label: String,
    },
    /// A separator line.
    Separator,
    /// A submenu (one per tunnel).
    Submenu {
        /// The text shown.
        label: String,
        /// Its entries.
        items: Vec<TrayItem>,
    },
}

/// The whole tray: menu, icon and tooltip. Equal menus need no rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrayMenu {
    /// The entries, top to bottom.
    pub items: Vec<TrayItem>,
    /// The icon.
    pub icon: Icon,
    /// The tooltip.
    pub tooltip: String,
}

/// A tunnel's line: database, who, port.
fn tunnel_label(t: &TunnelView) -> String {
    let who = match (&t.db_user, &t.db_name) {
        (Some(u), Some(d)) => format!(" — {u}@{d}"),
        (Some(u), None) => format!(" — {u}"),
        (None, Some(d)) => format!(" — {d}"),
        (None, None) => String::new(),
    };
    format!("{}{who}  :{}", t.database, t.port)
}

fn action(action: TrayAction, label: &str, enabled: bool) -> TrayItem {
    TrayItem::Action {
        action,
        label: label.to_owned(),
        enabled,
    }
}

fn tunnel_submenu(t: &TunnelView) -> TrayItem {
    let conns = match t.connections {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    };
    let mut items = vec![
        TrayItem::Info {
            id: format!("t:{}:info", t.id),
            label: format!("Listening on {} · {conns}", t.address),
        },
        TrayItem::Separator,
    ];
    for a in TunnelAction::RUNNING {
        if a == TunnelAction::Stop {
            items.push(TrayItem::Separator);
        }
        items.push(action(
            TrayAction::Tunnel {
                id: t.id,
                action: a,
            },
            a.label(),
            true,
        ));
    }
    TrayItem::Submenu {
        label: format!("● {}", tunnel_label(t)),
        items,
    }
}

/// The tray for these running tunnels and session state.
pub fn tray_menu(tunnels: &[TunnelView], signed_in: bool) -> TrayMenu {
    let mut items = Vec::new();
    if tunnels.is_empty() {
        items.push(TrayItem::Info {
            id: "none".into(),
            label: "No tunnels".into(),
        });
    }
    items.extend(tunnels.iter().map(tunnel_submenu));
    items.extend([
        TrayItem::Separator,
        action(TrayAction::Open, "Open Postern", true),
        action(TrayAction::SignOut, "Sign out", signed_in),
        TrayItem::Separator,
        action(TrayAction::Quit, "Quit Postern", true),
    ]);
    let (icon, tooltip) = if tunnels.is_empty() {
        (Icon::Idle, "Postern — no tunnels".to_owned())
    } else {
        (
            Icon::Active,
            format!("Postern — {} tunnel(s) active", tunnels.len()),
        )
    };
    TrayMenu {
        items,
        icon,
        tooltip,
    }
}

/// What the shell must do after a tray click.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrayEffect {
    /// Nothing more.
    None,
    /// Show the window.
    OpenWindow,
    /// Exit the process (the tunnels are stopped).
    Exit,
    /// Put this text on the clipboard.
    Copy(String),
    /// Tell the user.
    Notify {
        /// The notification's title.
        title: String,
        /// Its text.
        body: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[TrayItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                TrayItem::Action { label, enabled, .. } => {
                    format!("{label}{}", if *enabled { "" } else { " (off)" })
                }
                TrayItem::Info { label, .. } => format!("[{label}]"),
                TrayItem::Separator => "---".into(),
                TrayItem::Submenu { label, .. } => format!("{label} >"),
            })
            .collect()
    }

    fn tunnel(id: u32, port: u16, connections: u32) -> TunnelView {
        TunnelView {
            id,
            profile: "gw".into(),
            database: "pg".into(),
            kind: "self-hosted".into(),
            db_user: Some("reader".into()),
            db_name: Some("app".into()),
            db_roles: vec![],
            address: format!("127.0.0.1:{port}"),
            port,
            socket_dir: None,
            uri: format!("postgresql://reader@127.0.0.1:{port}/app?sslmode=disable"),
            psql: format!("psql \"host=127.0.0.1 port={port} user=reader dbname=app\""),
            started_unix: 0.0,
            connections,
            total_connections: connections,
            bytes_in: 0.0,
            bytes_out: 0.0,
            warn_after_secs: None,
            cancel_after_secs: None,
            favourite: false,
            port_changed_from: None,
            port_notice: None,
            refused_connections: 0,
        }
    }

    #[test]
    fn without_tunnels_the_tray_says_so_and_sign_out_follows_the_session() {
        let menu = tray_menu(&[], false);
        assert_eq!(
            labels(&menu.items),
            [
                "[No tunnels]",
                "---",
                "Open Postern",
                "Sign out (off)",
                "---",
                "Quit Postern"
            ]
        );
        assert_eq!(menu.icon, Icon::Idle);
        assert_eq!(menu.tooltip, "Postern — no tunnels");
        assert!(labels(&tray_menu(&[], true).items).contains(&"Sign out".to_owned()));
    }

    #[test]
    fn each_running_tunnel_has_its_submenu_of_actions() {
        let menu = tray_menu(&[tunnel(3, 40111, 1), tunnel(4, 40112, 2)], true);
        assert_eq!(menu.icon, Icon::Active);
        assert_eq!(menu.tooltip, "Postern — 2 tunnel(s) active");
        assert_eq!(
            labels(&menu.items)[..2],
            ["● pg — reader@app  :40111 >", "● pg — reader@app  :40112 >"]
        );
        let TrayItem::Submenu { items, .. } = &menu.items[1] else {
            panic!("{:?}", menu.items[1])
        };
        assert_eq!(
            labels(items),
            [
                "[Listening on 127.0.0.1:40112 · 2 connections]",
                "---",
                "Copy connection URI",
                "Copy psql command",
                "Open in pgAdmin",
                "---",
                "Stop tunnel"
            ]
        );
        let ids: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                TrayItem::Action { action, .. } => Some(action.id()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["t:4:uri", "t:4:psql", "t:4:pgadmin", "t:4:stop"]);
        // A menu with the same content needs no rebuild; a new count does.
        assert_eq!(
            menu,
            tray_menu(&[tunnel(3, 40111, 1), tunnel(4, 40112, 2)], true)
        );
        assert_ne!(
            menu,
            tray_menu(&[tunnel(3, 40111, 2), tunnel(4, 40112, 2)], true)
        );
    }

    #[test]
    fn entry_ids_read_back_as_their_actions() {
        for action in [
            TrayAction::Open,
            TrayAction::SignOut,
            TrayAction::Quit,
            TrayAction::Tunnel {
                id: 12,
                action: TunnelAction::OpenPgAdmin,
            },
        ] {
            assert_eq!(TrayAction::parse(&action.id()), Some(action));
        }
        for inert in ["none", "t:3:info", "t:x:stop", "t:3:stop:more", ""] {
            assert_eq!(TrayAction::parse(inert), None, "{inert}");
        }
    }
}
