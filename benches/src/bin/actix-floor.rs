//! The actix-web floor for `benches/load/forwardauth.sh`: a plain actix-web server that
//! answers every request 200 with fixed headers (the sidecar's identity headers for the
//! load token, passed in), on one listener with the sidecar's `HttpServer` settings. What
//! the sidecar costs above it is ours, not actix-web's.
//!
//!   actix-floor --listen 127.0.0.1:8080 --workers 1 --header "x-user-id: load-user" ...

use std::net::TcpListener;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, web};

struct Headers(Vec<(HeaderName, HeaderValue)>);

async fn answer(headers: web::Data<Headers>) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    for (name, value) in &headers.0 {
        res.insert_header((name.clone(), value.clone()));
    }
    res.finish()
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "actix-floor: {problem}\nusage: actix-floor --listen ADDR [--workers N] [--header 'name: value']..."
    );
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let (mut listen, mut workers, mut headers) = (None, 1usize, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--listen" => listen = Some(value()),
            "--workers" => {
                workers = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--workers: a number"))
            }
            "--header" => {
                let line = value();
                let (name, v) = line.split_once(':').unwrap_or_else(|| {
                    usage(&format!("--header {line:?}: expected 'name: value'"))
                });
                let name = HeaderName::try_from(name.trim())
                    .unwrap_or_else(|e| usage(&format!("header name {name:?}: {e}")));
                let v = HeaderValue::try_from(v.trim())
                    .unwrap_or_else(|e| usage(&format!("header value {v:?}: {e}")));
                headers.push((name, v));
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let listen = listen.unwrap_or_else(|| usage("--listen is required"));
    let listener = TcpListener::bind(&listen)?;
    let headers = web::Data::new(Headers(headers));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(headers.clone())
                .default_service(web::to(answer))
        })
        .workers(workers)
        .listen(listener)?
        .run()
        .await
    })
}
