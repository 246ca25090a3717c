//! `rediss://`: TLS through rustls, with the test's own CA, client certificates and ACL
//! users; a server the client cannot trust is refused with a clear error. The store suite's
//! core cases also run over TLS (`store::*::redis_tls`); a TLS-only Redis Cluster is reached
//! through `open_cluster_with_tls`.

use std::sync::Arc;

use teloxide::types::UserId;
use teloxide_retention::{Noted, RedisStore, RedisTls, Retention};

use crate::common::certs::TestCerts;
use crate::common::{DAY, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_and_client_certificates_work_over_tls() {
    crate::common::init_tracing();
    let certs = Arc::new(TestCerts::generate());
    let server = RedisServer::start_tls(Arc::clone(&certs), true);
    let mut admin = server.sync_connection();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "bot", "on", ">s3cret", "~*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let port = server.port();

    let url = format!("rediss://bot:s3cret@localhost:{port}/");
    let store = RedisStore::connect_with_tls(&url, &certs.client_tls()).await.unwrap();
    let retention =
        Retention::builder(store).inactive_after(30 * DAY).without_commands().build().unwrap();
    assert_eq!(retention.note_interaction(UserId(7)).await, Noted::Written);
    assert_eq!(retention.tracked_users().await.unwrap(), 1);
    let whoami: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    assert!(whoami.contains("user=bot"), "the store logged in as the ACL user: {whoami}");

    // A wrong password is Redis's own error, not a TLS one.
    let url = format!("rediss://bot:wrong@localhost:{port}/");
    let err = RedisStore::connect_with_tls(&url, &certs.client_tls()).await.unwrap_err();
    assert!(!err.to_string().contains("certificate"), "{err}");

    // Without a client certificate the server (tls-auth-clients yes) hangs up.
    let no_cert = RedisTls::new().ca_pem(certs.ca_pem.clone());
    let url = format!("rediss://bot:s3cret@localhost:{port}/");
    let err = RedisStore::connect_with_tls(&url, &no_cert).await.unwrap_err();
    assert!(matches!(err, teloxide_retention::Error::Redis(_)), "a refused connection: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_client_cannot_trust_is_refused_with_a_clear_error() {
    crate::common::init_tracing();
    let certs = Arc::new(TestCerts::generate());
    let server = RedisServer::start_tls(Arc::clone(&certs), false);
    let url = server.url();

    // Another CA did not sign the server's certificate.
    let other = TestCerts::generate();
    let err = RedisStore::connect_with_tls(&url, &RedisTls::new().ca_pem(other.ca_pem.clone()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(err.is_config(), "{err:?}");
    assert!(text.contains("not trusted") && text.contains("RedisTls::ca_pem"), "{text}");

    // A plain `rediss://` URL works out of the box (TLS is built in, no "feature not
    // enabled"): it trusts the webpki roots, which did not sign this test's server.
    let err = RedisStore::connect(&url).await.unwrap_err();
    assert!(err.to_string().contains("not trusted"), "{err}");

    // With the right CA, the same server is fine; `open` connects lazily and works too.
    let tls = RedisTls::new().ca_pem(certs.ca_pem.clone());
    RedisStore::connect_with_tls(&url, &tls).await.unwrap();
    let store = RedisStore::open_with_tls(&url, &tls).await.unwrap();
    let retention =
        Retention::builder(store).inactive_after(30 * DAY).without_commands().build().unwrap();
    assert_eq!(retention.note_interaction(UserId(1)).await, Noted::Written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_is_reached_with_a_ca_and_client_certificate_of_its_own() {
    crate::common::init_tracing();
    let certs = Arc::new(TestCerts::generate());
    let server = RedisServer::start_tls_cluster(Arc::clone(&certs));
    let clock = teloxide_retention::ManualClock::at_unix_ms(crate::common::T0);
    let store =
        RedisStore::open_cluster_with_tls([server.url()], &certs.client_tls()).await.unwrap();
    assert_eq!(store.shards(), 24, "a cluster's default");
    let retention = Retention::builder(store)
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        .erase_with(crate::support::Recorder::new("profiles"))
        .build()
        .unwrap();
    for user in 1..=50 {
        assert_eq!(retention.note_interaction(UserId(user)).await, Noted::Written);
    }
    assert_eq!(retention.tracked_users().await.unwrap(), 50);
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("*:seen").query(&mut server.sync_connection()).unwrap();
    assert!(keys.len() > 12, "users spread over the shards: {keys:?}");
    clock.advance(31 * DAY);
    assert_eq!(retention.prune_once().await.unwrap().erased, 50);
    assert_eq!(retention.tracked_users().await.unwrap(), 0);

    // Another CA did not sign the nodes' certificate.
    let other = TestCerts::generate();
    let err = RedisStore::open_cluster_with_tls([server.url()], &other.client_tls()).await;
    let err = err.unwrap_err();
    assert!(err.is_config(), "{err:?}");
}
