//! Sources: paths, http(s) URLs (against a server on 127.0.0.1), data URIs and bare base64,
//! and each way fetching can fail as a one-line error that names the cause.

use std::io::{Cursor, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine;
use image::{DynamicImage, ImageFormat, Rgb};
use kiln_media::image_in::{load_image, FetchLimits, ImageError, ImageSource, RgbImage};

fn sample_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 50, y as u8 * 80, 7]));
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn assert_is_sample(image: &RgbImage) {
    assert_eq!((image.width, image.height), (5, 3));
    assert_eq!(image.pixel(4, 2), Some([200, 160, 7]));
}

fn load(source: &str) -> Result<RgbImage, ImageError> {
    load_image(&ImageSource::parse(source), &FetchLimits::default())
}

fn one_line(error: &ImageError) -> String {
    let message = error.to_string();
    assert!(!message.contains('\n'), "multi-line message: {message}");
    message
}

/// A minimal HTTP/1.1 server on 127.0.0.1 with canned routes; counts the body bytes it
/// managed to send on the endless route.
struct TestServer {
    port: u16,
    endless_bytes_sent: Arc<AtomicU64>,
}

impl TestServer {
    fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let endless_bytes_sent = Arc::new(AtomicU64::new(0));
        let counter = endless_bytes_sent.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                thread::spawn(move || serve(stream, port, &counter));
            }
        });
        TestServer {
            port,
            endless_bytes_sent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn serve(mut stream: TcpStream, port: u16, endless_bytes_sent: &AtomicU64) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    let png = sample_png();
    let length = |n: usize| ("Content-Length", n.to_string());
    match path.as_str() {
        "/image.png" | "/no-extension" => respond(
            &mut stream,
            "200 OK",
            &[length(png.len()), ("Content-Type", "image/png".into())],
            &png,
        ),
        "/missing.png" => respond(&mut stream, "404 Not Found", &[length(9)], b"not found"),
        "/broken" => respond(&mut stream, "500 Internal Server Error", &[length(0)], b""),
        "/page" => {
            let page = b"<!DOCTYPE html><html><body>an image viewer</body></html>";
            respond(
                &mut stream,
                "200 OK",
                &[length(page.len()), ("Content-Type", "text/html".into())],
                page,
            );
        }
        "/to-localhost" => respond(
            &mut stream,
            "302 Found",
            &[
                ("Location", format!("http://localhost:{port}/image.png")),
                length(0),
            ],
            b"",
        ),
        "/declared-huge" => respond(
            &mut stream,
            "200 OK",
            &[("Content-Length", "60000000".into())],
            &png,
        ),
        "/endless" => {
            // No Content-Length: the body ends when the connection closes, which it never
            // does; the client must stop reading at its cap.
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: image/png\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&png[..16]);
            let chunk = vec![0u8; 64 * 1024];
            while stream.write_all(&chunk).is_ok() {
                endless_bytes_sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        "/silent" => thread::sleep(Duration::from_secs(5)),
        "/stalls-mid-body" => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", png.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&png[..10]);
            let _ = stream.flush();
            thread::sleep(Duration::from_secs(5));
        }
        other => {
            // /hops/N redirects N times (relative Locations), then serves the image.
            if let Some(n) = other
                .strip_prefix("/hops/")
                .and_then(|n| n.parse::<u32>().ok())
            {
                if n == 0 {
                    respond(&mut stream, "200 OK", &[length(png.len())], &png);
                } else {
                    let location = format!("/hops/{}", n - 1);
                    respond(
                        &mut stream,
                        "302 Found",
                        &[("Location", location), length(0)],
                        b"",
                    );
                }
            } else {
                respond(&mut stream, "404 Not Found", &[length(0)], b"");
            }
        }
    }
}

fn fast_limits() -> FetchLimits {
    FetchLimits {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_millis(500),
        // Bounds the DNS lookup of the .invalid host too, on machines without a resolver.
        total_timeout: Duration::from_secs(5),
        ..FetchLimits::default()
    }
}

#[test]
fn parse_decides_the_form() {
    let png_base64 = base64::engine::general_purpose::STANDARD.encode(sample_png());
    assert_eq!(
        ImageSource::parse("https://v3.fal.media/files/zebra/image.webp"),
        ImageSource::Url("https://v3.fal.media/files/zebra/image.webp".into())
    );
    assert_eq!(
        ImageSource::parse("HTTP://example.com/a.png"),
        ImageSource::Url("HTTP://example.com/a.png".into())
    );
    assert!(matches!(
        ImageSource::parse("data:image/png;base64,iVBORw0KGgo="),
        ImageSource::DataUri(_)
    ));
    assert_eq!(
        ImageSource::parse(&png_base64),
        ImageSource::Base64(png_base64.clone())
    );
    assert!(matches!(
        ImageSource::parse("/9j/4AAQSkZJRgABAQ"),
        ImageSource::Base64(_)
    ));
    assert_eq!(
        ImageSource::parse("ftp://example.com/a.png"),
        ImageSource::Url("ftp://example.com/a.png".into())
    );
    assert_eq!(
        ImageSource::parse("first.jpg"),
        ImageSource::Path("first.jpg".into())
    );
    assert_eq!(
        ImageSource::parse("  photos/cat.png \n"),
        ImageSource::Path("photos/cat.png".into())
    );
}

#[test]
fn loads_from_a_path() {
    let dir = std::env::temp_dir().join(format!("kiln-image-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.png");
    std::fs::write(&path, sample_png()).unwrap();
    assert_is_sample(&load(path.to_str().unwrap()).unwrap());

    // A file just over a (small) cap is refused before decoding.
    let limits = FetchLimits {
        max_bytes: 20,
        ..FetchLimits::default()
    };
    let error = load_image(&ImageSource::Path(path.clone()), &limits).unwrap_err();
    assert!(
        matches!(error, ImageError::TooLarge { limit: 20, .. }),
        "{error:?}"
    );
    assert!(one_line(&error).contains("sample.png"));

    let not_an_image = dir.join("notes.txt");
    std::fs::write(&not_an_image, "shopping list").unwrap();
    let error = load(not_an_image.to_str().unwrap()).unwrap_err();
    assert!(matches!(error, ImageError::NotAnImage { .. }), "{error:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file_names_the_path() {
    let error = load("/nonexistent/kiln/first-frame.png").unwrap_err();
    assert!(matches!(error, ImageError::ReadFile { .. }), "{error:?}");
    let message = one_line(&error);
    assert!(
        message.contains("/nonexistent/kiln/first-frame.png") && message.contains("check the path"),
        "{message}"
    );
}

#[test]
fn loads_data_uris_in_the_forms_clients_send() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(sample_png());
    for uri in [
        format!("data:image/png;base64,{encoded}"),
        // fal_client.encode_file guesses the type; unknown ones are octet-stream.
        format!("data:application/octet-stream;base64,{encoded}"),
        format!("DATA:image/png;charset=binary;BASE64,{encoded}"),
        format!("data:;base64,{encoded}"),
    ] {
        assert_is_sample(&load(&uri).unwrap_or_else(|e| panic!("{}: {e}", &uri[..40])));
    }
}

#[test]
fn bad_data_uris_are_refused() {
    let cases = [
        ("data:image/png,rawbytes", "only ;base64"),
        ("data:image/png;base64", "no comma"),
        (
            "data:image/png;base64,***not base64***",
            "invalid base64 image",
        ),
        ("data:image/png;base64,", "empty"),
    ];
    for (uri, expected) in cases {
        let error = load(uri).unwrap_err();
        assert!(
            matches!(error, ImageError::BadDataUri { .. }),
            "{uri}: {error:?}"
        );
        let message = one_line(&error);
        assert!(
            message.contains(expected) || message.contains("invalid"),
            "{uri}: {message}"
        );
        assert!(message.contains("data:image/png;base64,"), "{message}");
    }
    // A data URI of an SVG is a real image format kiln does not take.
    let svg = base64::engine::general_purpose::STANDARD
        .encode("<svg xmlns='http://www.w3.org/2000/svg'/>");
    let error = load(&format!("data:image/svg+xml;base64,{svg}")).unwrap_err();
    assert!(
        matches!(error, ImageError::UnsupportedFormat { .. }),
        "{error:?}"
    );
}

#[test]
fn loads_bare_base64_wrapped_unpadded_or_url_safe() {
    let png = sample_png();
    let standard = base64::engine::general_purpose::STANDARD.encode(&png);
    let wrapped: String = standard
        .as_bytes()
        .chunks(76)
        .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
        .collect();
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&png);
    for text in [&standard, &wrapped, &url_safe] {
        let source = ImageSource::Base64(text.clone());
        assert_is_sample(&load_image(&source, &FetchLimits::default()).unwrap());
    }
    let error = load_image(
        &ImageSource::Base64("iVBORw0KGgo!!".into()),
        &FetchLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(error, ImageError::BadBase64 { .. }), "{error:?}");

    // The cap applies to the decoded size, checked before decoding.
    let limits = FetchLimits {
        max_bytes: 10,
        ..FetchLimits::default()
    };
    let error = load_image(&ImageSource::Base64(standard), &limits).unwrap_err();
    assert!(
        matches!(error, ImageError::TooLarge { limit: 10, .. }),
        "{error:?}"
    );
}

#[test]
fn loads_from_a_url_with_and_without_extension() {
    let server = TestServer::start();
    assert_is_sample(&load(&server.url("/image.png")).unwrap());
    assert_is_sample(&load(&server.url("/no-extension")).unwrap());
}

#[test]
fn http_errors_name_the_status() {
    let server = TestServer::start();
    let error = load(&server.url("/missing.png")).unwrap_err();
    assert!(
        matches!(error, ImageError::HttpStatus { status: 404, .. }),
        "{error:?}"
    );
    let message = one_line(&error);
    assert!(
        message.contains("HTTP 404 Not Found") && message.contains("/missing.png"),
        "{message}"
    );

    let error = load(&server.url("/broken")).unwrap_err();
    assert!(one_line(&error).contains("HTTP 500"), "{error}");
}

#[test]
fn a_web_page_instead_of_an_image_is_named() {
    let server = TestServer::start();
    let error = load(&server.url("/page")).unwrap_err();
    assert!(
        one_line(&error).contains("not an image (an HTML page)"),
        "{error}"
    );
}

#[test]
fn follows_up_to_five_redirects_and_no_more() {
    let server = TestServer::start();
    assert_is_sample(&load(&server.url("/hops/5")).unwrap());
    let error = load(&server.url("/hops/6")).unwrap_err();
    assert!(
        matches!(error, ImageError::TooManyRedirects { max: 5, .. }),
        "{error:?}"
    );
    assert!(one_line(&error).contains("more than 5 times"), "{error}");
}

#[test]
fn oversize_bodies_are_cut_off_at_the_cap() {
    let server = TestServer::start();
    let limits = FetchLimits {
        max_bytes: 1_000_000,
        ..fast_limits()
    };
    let error = load_image(&ImageSource::Url(server.url("/endless")), &limits).unwrap_err();
    assert!(
        matches!(
            error,
            ImageError::TooLarge {
                limit: 1_000_000,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(one_line(&error).contains("1000000-byte cap"), "{error}");
    // The client stopped reading: the server could only push the cap plus socket buffers.
    thread::sleep(Duration::from_millis(300));
    let sent = server.endless_bytes_sent.load(Ordering::SeqCst);
    assert!(sent < 40_000_000, "server sent {sent} bytes");

    // A declared length over the cap is refused without reading the body.
    let error = load(&server.url("/declared-huge")).unwrap_err();
    assert!(
        matches!(
            error,
            ImageError::TooLarge {
                limit: 50_000_000,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(one_line(&error).contains("under 50 MB"), "{error}");
}

#[test]
fn a_silent_server_times_out() {
    let server = TestServer::start();
    for path in ["/silent", "/stalls-mid-body"] {
        let error = load_image(&ImageSource::Url(server.url(path)), &fast_limits()).unwrap_err();
        assert!(
            matches!(error, ImageError::Timeout { .. }),
            "{path}: {error:?}"
        );
        assert!(one_line(&error).contains("timed out"), "{error}");
    }
}

#[test]
fn unreachable_urls_are_named() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/image.png");
    let error = load_image(&ImageSource::Url(url.clone()), &fast_limits()).unwrap_err();
    assert!(matches!(error, ImageError::Unreachable { .. }), "{error:?}");
    let message = one_line(&error);
    assert!(
        message.contains(&url) && message.contains("cannot reach"),
        "{message}"
    );

    // RFC 6761 reserves .invalid: it never resolves.
    let error = load_image(
        &ImageSource::Url("http://kiln-test.invalid/a.png".into()),
        &fast_limits(),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            ImageError::Unreachable { .. } | ImageError::Timeout { .. }
        ),
        "{error:?}"
    );
}

#[test]
fn malformed_urls_are_refused() {
    for url in [
        "http://",
        "https:///path-only",
        "http://exa mple.com/a.png",
        "ftp://example.com/a.png",
    ] {
        let error = load_image(&ImageSource::Url(url.into()), &fast_limits()).unwrap_err();
        assert!(
            matches!(error, ImageError::BadUrl { .. }),
            "{url}: {error:?}"
        );
        assert!(one_line(&error).contains("http:// or https://"), "{error}");
    }
}

/// What the address policy was asked about: host name and resolved addresses.
type HostAddresses = (String, Vec<IpAddr>);

#[test]
fn address_policy_is_checked_on_every_hop() {
    let server = TestServer::start();
    let seen: Arc<Mutex<Vec<HostAddresses>>> = Arc::default();
    let seen_by_policy = seen.clone();
    let limits = FetchLimits {
        // Allows the first hop (127.0.0.1) and refuses the redirect's host name.
        address_policy: Some(Arc::new(move |host: &str, addresses: &[IpAddr]| {
            seen_by_policy
                .lock()
                .unwrap()
                .push((host.to_string(), addresses.to_vec()));
            if host == "localhost" {
                Err("localhost is not allowed".to_string())
            } else {
                Ok(())
            }
        })),
        ..fast_limits()
    };
    assert_is_sample(&load_image(&ImageSource::Url(server.url("/image.png")), &limits).unwrap());
    let error = load_image(&ImageSource::Url(server.url("/to-localhost")), &limits).unwrap_err();
    assert!(
        matches!(error, ImageError::AddressRefused { .. }),
        "{error:?}"
    );
    assert!(
        one_line(&error).contains("localhost is not allowed"),
        "{error}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "127.0.0.1");
    assert!(seen[0].1.iter().all(|ip| ip.is_loopback()));
    assert!(seen.iter().any(|(host, _)| host == "localhost"), "{seen:?}");
}
