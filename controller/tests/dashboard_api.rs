//! The dashboard's server side over real HTTP and MQTT: the page and its assets, login to a
//! cookie session that the API accepts (writes only with the dashboard's header), logout
//! (the cookie `Secure` when the API serves HTTPS, and only then);
//! and device commands — a device that answers, one that does not (504), an unknown
//! service (404), an offline device (409).
#![allow(clippy::unwrap_used)]

mod support;

use coracle_proto::{
    decode, encode, CommandOutcome, CommandReply, CommandRequest, ContainerState, Generation,
    Health, Presence, ReportedState, ServiceStatus, TopicKind, UpdateStatus,
};
use rumqttc::{Event, Incoming, QoS};
use support::{eventually, Controller};
use ureq::http::{Response, StatusCode};
use ureq::Body;

struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn new(controller: &Controller) -> Self {
        Self {
            base: format!("http://{}", controller.api),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent(),
        }
    }

    /// Over HTTPS, trusting the controller CA.
    fn new_tls(controller: &Controller) -> Self {
        Self {
            base: format!("https://{}", controller.api),
            agent: support::https_agent(&controller.ca_pem()),
        }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.call().unwrap()
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Response<Body> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send(body).unwrap()
    }
}

fn text(mut response: Response<Body>) -> String {
    response.body_mut().read_to_string().unwrap()
}

#[test]
fn over_https_the_session_cookie_is_secure_httponly_and_strict() {
    let controller = Controller::start_tls();
    let http = Http::new_tls(&controller);
    assert_eq!(http.get("/", &[]).status(), StatusCode::OK);
    let body = format!(r#"{{"token":"{}"}}"#, controller.admin_token().trim());
    let login = http.post("/dashboard/login", &[], &body);
    assert_eq!(login.status(), StatusCode::NO_CONTENT);
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("cookie", cookie.as_str())];
    assert_eq!(
        http.get("/api/v1/fleet", &with_cookie).status(),
        StatusCode::OK
    );
    let marked = [("cookie", cookie.as_str()), ("x-coracle-dashboard", "1")];
    let logout = http.post("/dashboard/logout", &marked, "");
    let cleared = logout.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cleared.contains("; Secure") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[test]
fn login_gives_a_cookie_session_the_api_accepts_until_logout() {
    let controller = Controller::start();
    let http = Http::new(&controller);

    let page = http.get("/", &[]);
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(text(page).contains("/assets/app.js"));
    assert_eq!(http.get("/assets/app.js", &[]).status(), StatusCode::OK);
    assert_eq!(
        http.get("/assets/nope.js", &[]).status(),
        StatusCode::NOT_FOUND
    );

    let wrong = http.post("/dashboard/login", &[], r#"{"token":"wrong"}"#);
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(text(wrong).contains("missing or wrong token"));
    assert_eq!(
        http.get("/api/v1/fleet", &[]).status(),
        StatusCode::UNAUTHORIZED
    );

    let body = format!(r#"{{"token":"{}"}}"#, controller.admin_token());
    let login = http.post("/dashboard/login", &[], &body);
    assert_eq!(login.status(), StatusCode::NO_CONTENT);
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("cookie", cookie.as_str())];

    assert_eq!(
        http.get("/api/v1/fleet", &with_cookie).status(),
        StatusCode::OK
    );
    let enrol = r#"{"id":"pi-web"}"#;
    assert_eq!(
        http.post("/api/v1/devices", &with_cookie, enrol).status(),
        StatusCode::UNAUTHORIZED,
        "a cookie write without the dashboard header could be cross-site"
    );
    let marked = [("cookie", cookie.as_str()), ("x-coracle-dashboard", "1")];
    assert_eq!(
        http.post("/api/v1/devices", &marked, enrol).status(),
        StatusCode::CREATED
    );

    assert_eq!(
        http.post("/dashboard/logout", &with_cookie, "{}").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        http.get("/api/v1/fleet", &with_cookie).status(),
        StatusCode::UNAUTHORIZED
    );
}

fn reported(device: &coracle_proto::DeviceId) -> ReportedState {
    ReportedState {
        sealing_key: String::new(),
        device: device.clone(),
        applied: Generation(1),
        update: UpdateStatus::Idle,
        services: vec![ServiceStatus {
            name: "web".to_string().try_into().unwrap(),
            image: coracle_proto::samples::reported_state(1).services[0].image,
            state: ContainerState::Running,
            restart_count: 0,
            last_exit_code: None,
            oom_killed: false,
            health: Health::Healthy,
        }],
        layers: Vec::new(),
        conditions: Vec::new(),
        agent_version: "test".into(),
        platform: "linux/arm64".into(),
        credentials: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_commands_are_answered_refused_or_time_out() {
    let controller = Controller::start();
    let boot = controller.enrol("pi-cmd");
    let id = boot.device.clone();
    let (client, mut el) = support::connect_device(controller.broker_tls, &boot)
        .await
        .unwrap();
    let publish = |kind: TopicKind, body: Vec<u8>| {
        let client = client.clone();
        let topic = kind.for_device(&id);
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, kind.retained(), body)
                .await
                .unwrap()
        }
    };
    client
        .subscribe(TopicKind::Cmd.for_device(&id), QoS::AtLeastOnce)
        .await
        .unwrap();
    publish(TopicKind::Online, encode(&Presence::Online)).await;
    publish(TopicKind::Reported, encode(&reported(&id))).await;

    // The device answers log tails while `answering` is set, and ignores commands after.
    let answering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answers = answering.clone();
    let replier = client.clone();
    let reply_topic = TopicKind::CmdReply.for_device(&id);
    let device = tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            let Event::Incoming(Incoming::Publish(p)) = event else {
                continue;
            };
            let request: CommandRequest = decode(&p.payload).unwrap();
            if !answers.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let reply = CommandReply {
                id: request.id,
                outcome: CommandOutcome::Logs {
                    lines: vec!["hello from web".into()],
                    truncated: false,
                },
            };
            replier
                .publish(&reply_topic, QoS::AtLeastOnce, false, encode(&reply))
                .await
                .unwrap();
        }
    });

    let http = Http::new(&controller);
    let token = format!("Bearer {}", controller.admin_token());
    let auth = [("authorization", token.as_str())];
    let logs = "/api/v1/devices/pi-cmd/services/web/logs?lines=5";
    // Blocking HTTP calls on this worker; the other one runs the device and the MQTT loop.
    eventually("the device to be online with its service", || {
        let fleet = text(http.get("/api/v1/fleet", &auth));
        (fleet.contains(r#""online":true"#) && fleet.contains(r#""name":"web""#)).then_some(())
    })
    .await;
    let answered = http.get(logs, &auth);
    assert_eq!(answered.status(), StatusCode::OK);
    let answered = text(answered);
    let answered: serde_json::Value = serde_json::from_str(&answered).unwrap();
    assert_eq!(answered["lines"][0], "hello from web");

    let unknown = http.get("/api/v1/devices/pi-cmd/services/db/logs", &auth);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // A restart answered with logs is not a restart: refused with what came back.
    let odd = http.post("/api/v1/devices/pi-cmd/services/web/restart", &auth, "{}");
    assert_eq!(odd.status(), StatusCode::CONFLICT);

    // The same through the CLI: `coracle logs` prints the lines; an unknown service is
    // "not found" (exit 3); the odd restart is a conflict (exit 4) that names the answer.
    let cli = |args: &[&str]| {
        let controller = &controller;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::block_in_place(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            controller.cli(&args)
        })
    };
    let tail = cli(&["logs", "pi-cmd", "web", "-n", "5"]);
    assert!(tail.status.success(), "{tail:?}");
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "hello from web\n");
    assert_eq!(cli(&["logs", "pi-cmd", "db"]).status.code(), Some(3));
    let restart = cli(&["restart", "pi-cmd", "web"]);
    assert_eq!(restart.status.code(), Some(4), "{restart:?}");

    answering.store(false, std::sync::atomic::Ordering::SeqCst);
    let silent = http.get(logs, &auth);
    assert_eq!(silent.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(text(silent).contains("did not answer"));

    publish(TopicKind::Online, encode(&Presence::Offline)).await;
    eventually("the device to be offline", || {
        let fleet = text(http.get("/api/v1/fleet", &auth));
        fleet.contains(r#""online":false"#).then_some(())
    })
    .await;
    let offline = http.get(logs, &auth);
    assert_eq!(offline.status(), StatusCode::CONFLICT);
    let offline = text(offline);
    assert!(offline.contains("offline"), "{offline}");
    device.abort();
}
