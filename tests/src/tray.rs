//! A stand-in for the desktop shell on the app's private session bus, so the
//! tests can see what a person sees of the app without a window: the tray
//! icon and its menu, and notifications.
//!
//! On Linux Tauri's tray is libayatana-appindicator: it registers a
//! StatusNotifierItem with whoever owns `org.kde.StatusNotifierWatcher` and
//! exports its menu with dbusmenu (`com.canonical.dbusmenu`); a panel shows
//! the item's `IconName` and the menu's layout, and sends `Event(id,
//! "clicked")` when a person clicks an entry. Notifications (notify-rust) are
//! `Notify` calls to `org.freedesktop.Notifications`. [`DesktopShell`] owns
//! both names, records what arrives, and reads and clicks the menu as a
//! panel does. Xvfb alone has neither, so without this the tray is never
//! seen.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::message::Header;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, interface};

use crate::eventually;

const ITEM_INTERFACE: &str = "org.kde.StatusNotifierItem";
const MENU_INTERFACE: &str = "com.canonical.dbusmenu";

/// A notification as the notification server received it.
#[derive(Clone, Debug)]
pub struct Notification {
    /// The title.
    pub summary: String,
    /// The text under it.
    pub body: String,
}

#[derive(Default)]
struct Seen {
    /// (unique bus name, object path) of each registered tray item.
    items: Vec<(String, String)>,
    notifications: Vec<Notification>,
}

type Shared = Arc<Mutex<Seen>>;

/// `org.kde.StatusNotifierWatcher`, as a panel provides it.
struct Watcher(Shared);

#[interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    /// `service` is a bus name (the item is at /StatusNotifierItem) or, as
    /// appindicator sends it, the item's object path on the caller's
    /// connection.
    fn register_status_notifier_item(&self, service: String, #[zbus(header)] header: Header<'_>) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let item = if service.starts_with('/') {
            (sender, service)
        } else {
            (service, "/StatusNotifierItem".to_owned())
        };
        self.0.lock().unwrap().items.push(item);
    }

    fn register_status_notifier_host(&self, _service: String) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        let seen = self.0.lock().unwrap();
        seen.items.iter().map(|(n, p)| format!("{n}{p}")).collect()
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// `org.freedesktop.Notifications`: records each notification.
struct Notifications(Shared);

#[interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)] // the D-Bus method's signature
    fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut seen = self.0.lock().unwrap();
        seen.notifications.push(Notification { summary, body });
        u32::try_from(seen.notifications.len()).unwrap()
    }

    fn close_notification(&self, _id: u32) {}

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "postern-tests".into(),
            "postern".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

/// The tray host and notification server of one session bus.
pub struct DesktopShell {
    conn: Connection,
    seen: Shared,
}

impl DesktopShell {
    /// Takes the watcher and notification names on the bus at `address`.
    /// Start it before the app: appindicator looks for a watcher when the
    /// tray is built.
    pub async fn start(address: &str) -> DesktopShell {
        let seen = Shared::default();
        let conn = zbus::connection::Builder::address(address)
            .expect("session bus address")
            .name("org.kde.StatusNotifierWatcher")
            .unwrap()
            .name("org.freedesktop.Notifications")
            .unwrap()
            .serve_at("/StatusNotifierWatcher", Watcher(seen.clone()))
            .unwrap()
            .serve_at(
                "/org/freedesktop/Notifications",
                Notifications(seen.clone()),
            )
            .unwrap()
            .build()
            .await
            .expect("connect to the session bus");
        DesktopShell { conn, seen }
    }

    /// The app's tray item, once it has registered.
    pub async fn tray_item(&self, timeout: Duration) -> TrayItem {
        let (service, path) = eventually(timeout, async || {
            let last = self.seen.lock().unwrap().items.last().cloned();
            last.ok_or("no tray item registered with the StatusNotifierWatcher")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        TrayItem {
            conn: self.conn.clone(),
            service,
            path: OwnedObjectPath::try_from(path).expect("item path"),
        }
    }

    /// The first notification whose summary is `summary`.
    pub async fn notification(&self, summary: &str, timeout: Duration) -> Notification {
        eventually(timeout, async || {
            let seen = self.seen.lock().unwrap();
            let found = seen.notifications.iter().find(|n| n.summary == summary);
            found
                .cloned()
                .ok_or_else(|| format!("received {:?}", seen.notifications))
        })
        .await
        .unwrap_or_else(|e| panic!("no notification {summary:?}: {e}"))
    }
}

/// One entry of a dbusmenu layout.
#[derive(Clone, Debug)]
pub struct MenuEntry {
    /// The id `Event` takes.
    pub id: i32,
    /// The text shown (empty for separators).
    pub label: String,
    /// Whether it can be clicked.
    pub enabled: bool,
    /// Its submenu.
    pub children: Vec<MenuEntry>,
}

type RawLayout = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);

impl MenuEntry {
    fn from_raw((id, props, children): RawLayout) -> MenuEntry {
        let string = |key: &str| {
            props
                .get(key)
                .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
        };
        // dbusmenu leaves out properties that have their default value.
        let enabled = props
            .get("enabled")
            .and_then(|v| bool::try_from(v).ok())
            .unwrap_or(true);
        let children = children
            .into_iter()
            .map(|child| {
                let mut value = Value::from(child);
                while let Value::Value(inner) = value {
                    value = *inner;
                }
                MenuEntry::from_raw(RawLayout::try_from(value).expect("a dbusmenu entry"))
            })
            .collect();
        MenuEntry {
            id,
            label: string("label").unwrap_or_default(),
            enabled,
            children,
        }
    }

    /// The first entry, at any depth, whose label contains `text`.
    pub fn find(&self, text: &str) -> Option<&MenuEntry> {
        self.children.iter().find_map(|c| {
            if c.label.contains(text) {
                Some(c)
            } else {
                c.find(text)
            }
        })
    }

    /// The labels of the entries directly under this one, separators left
    /// out.
    pub fn labels(&self) -> Vec<&str> {
        self.children
            .iter()
            .map(|c| c.label.as_str())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// The app's StatusNotifierItem, read and clicked as a panel does.
pub struct TrayItem {
    conn: Connection,
    service: String,
    path: OwnedObjectPath,
}

impl TrayItem {
    /// The process behind the item (the app).
    pub async fn pid(&self) -> u32 {
        zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .unwrap()
            .get_connection_unix_process_id(self.service.as_str().try_into().unwrap())
            .await
            .expect("the tray item's process")
    }

    /// Whether the app is still on the bus.
    pub async fn alive(&self) -> bool {
        zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .unwrap()
            .name_has_owner(self.service.as_str().try_into().unwrap())
            .await
            .unwrap()
    }

    async fn property(&self, name: &str) -> OwnedValue {
        zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(self.service.as_str())
            .unwrap()
            .path(&self.path)
            .unwrap()
            .build()
            .await
            .unwrap()
            .get(ITEM_INTERFACE.try_into().unwrap(), name)
            .await
            .unwrap_or_else(|e| panic!("tray item property {name}: {e}"))
    }

    /// The icon shown: appindicator passes a PNG file by path.
    pub async fn icon(&self) -> PathBuf {
        PathBuf::from(String::try_from(self.property("IconName").await).unwrap())
    }

    async fn menu_path(&self) -> OwnedObjectPath {
        OwnedObjectPath::try_from(self.property("Menu").await).unwrap()
    }

    /// The whole menu, as a panel lays it out.
    pub async fn menu(&self) -> MenuEntry {
        let reply = self
            .conn
            .call_method(
                Some(self.service.as_str()),
                &self.menu_path().await,
                Some(MENU_INTERFACE),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .expect("GetLayout");
        let (_revision, layout): (u32, RawLayout) = reply.body().deserialize().unwrap();
        MenuEntry::from_raw(layout)
    }

    /// Polls the menu until `ready` holds for it.
    pub async fn wait_menu(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&MenuEntry) -> bool,
    ) -> MenuEntry {
        eventually(timeout, async || {
            let menu = self.menu().await;
            if ready(&menu) {
                Ok(menu)
            } else {
                Err(format!("{menu:#?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("the tray menu never showed {what}: {e}"))
    }

    /// Polls until the icon shown has the pixels of `expected`.
    pub async fn wait_icon(&self, expected: &Path, timeout: Duration) {
        let want = rgba(expected).unwrap_or_else(|| panic!("{}", expected.display()));
        eventually(timeout, async || {
            let shown = self.icon().await;
            // Each change writes a new file and deletes the one before: this
            // one may be gone by the time it is read; then look again.
            if rgba(&shown).as_ref() == Some(&want) {
                Ok(())
            } else {
                Err(shown.display().to_string())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("the tray icon never became {}: {e}", expected.display()));
    }

    /// Clicks an entry.
    pub async fn click(&self, entry: &MenuEntry) {
        assert!(entry.enabled, "{:?} is disabled", entry.label);
        self.conn
            .call_method(
                Some(self.service.as_str()),
                &self.menu_path().await,
                Some(MENU_INTERFACE),
                "Event",
                &(entry.id, "clicked", Value::I32(0), 0u32),
            )
            .await
            .unwrap_or_else(|e| panic!("click {:?}: {e}", entry.label));
    }
}

/// A PNG's pixels as 8-bit RGBA, whatever its encoding (the app's icons are
/// paletted; the file appindicator is given is RGBA); `None` when it cannot
/// be read.
fn rgba(path: &Path) -> Option<(u32, u32, Vec<u8>)> {
    let bytes = std::fs::read(path).ok()?;
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::ALPHA | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().ok()?;
    let mut pixels = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut pixels).ok()?;
    assert_eq!(info.color_type, png::ColorType::Rgba, "{}", path.display());
    pixels.truncate(info.buffer_size());
    Some((info.width, info.height, pixels))
}
