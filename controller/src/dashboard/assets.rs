//! The dashboard's files, embedded in the binary at build time (no CDN, no build step):
//! plain HTML, CSS and JavaScript modules from `controller/assets/dashboard/`.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../assets/dashboard/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page every dashboard URL loads; the modules route inside it.
pub const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Files under `/assets/`.
pub const FILES: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("chart.js", JS),
    asset!("login.js", JS),
    asset!("fleet.js", JS),
    asset!("device.js", JS),
    asset!("device_actions.js", JS),
    asset!("service_charts.js", JS),
    asset!("enrol.js", JS),
    asset!("remote.js", JS),
    asset!("rollouts.js", JS),
    asset!("images.js", JS),
];

/// The file called `name`, if embedded.
pub fn find(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|a| a.name == name)
}
