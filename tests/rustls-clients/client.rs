//! A small HTTPS client on reqwest + rustls, built by the end-to-end tests against pinned
//! rustls versions (one Cargo.lock per folder). It makes one warm-up call, says `ready`, waits
//! for a line on stdin, then makes the calls the tests expect and prints each status.
//!
//! Usage: `rustls-client BASE_URL CA_FILE [fresh]`
//!
//! By default the calls go over HTTP/1.1 on the connection the warm-up opened. With `fresh` there
//! is no warm-up: `ready` comes first and the calls open their connection after the agent is
//! attached, over whatever ALPN settles on (HTTP/2 where reqwest offers it), so the agent sees the
//! whole HPACK history.

use std::io::BufRead as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(ca)) = (args.next(), args.next()) else {
        return Err("usage: rustls-client BASE_URL CA_FILE [fresh]".into());
    };
    let fresh = args.next().as_deref() == Some("fresh");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .pool_max_idle_per_host(1);
    if !fresh {
        builder = builder.http1_only();
    }
    let client = builder.build()?;
    let mut line = String::new();
    if fresh {
        println!("ready");
        std::io::stdin().lock().read_line(&mut line)?;
    } else {
        let warm = client
            .get(format!("{base}/v1/customers/cus_warmup"))
            .send()
            .await?;
        warm.bytes().await?;
        println!("ready");
        std::io::stdin().lock().read_line(&mut line)?;
    }

    let form = "application/x-www-form-urlencoded";
    let ok = client
        .post(format!("{base}/v1/charges?delay_ms=120"))
        .header("content-type", form)
        .header("idempotency-key", "rs-1")
        .body("amount=100&source=tok_visa")
        .send()
        .await?;
    println!("{}", ok.status().as_u16());
    ok.bytes().await?;
    let declined = client
        .post(format!("{base}/v1/charges"))
        .header("content-type", form)
        .body("amount=100&source=tok_chargeDeclined")
        .send()
        .await?;
    println!("{}", declined.status().as_u16());
    declined.bytes().await?;
    let missing = client.get(format!("{base}/v1/missing")).send().await?;
    println!("{}", missing.status().as_u16());
    missing.bytes().await?;
    // The pooled connection stays open until told: an agent reads a connection's addresses
    // from /proc when it first sees it, which an exited client would no longer have.
    println!("done");
    line.clear();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}
