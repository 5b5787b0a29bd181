//! Micro-benchmarks (criterion): mapping lookup at 100 / 10,000 / 100,000 mappings (exact hit,
//! wildcard hit, miss), the rate limiter, PKCS#12 decode cost per certificate, and a snapshot
//! refresh of 10,000 certificates from the file store (full, and with nothing changed).
//!
//! Run: `cargo bench --bench micro` (add `-- lookup` etc. to pick a group). With `MICRO_QUICK=1`
//! the 10,000-certificate refresh group is skipped (it takes about a minute to seed).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mtls_gateway::config::{RateLimitConfig, RateLimitFleetConfig, RefreshConfig};
use mtls_gateway::dev::certgen::{self, Leaf};
use mtls_gateway::ratelimit::fleet::MemoryCounter;
use mtls_gateway::ratelimit::RateLimiter;
use mtls_gateway::refresh::Refresher;
use mtls_gateway::snapshot::{normalize_url, CertEntry, MappingIndex};
use mtls_gateway::store::file::FileStore;
use mtls_gateway::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoredCertificate,
};

/// `n` mappings over 100 accounts x 3 services; every 4th one is a wildcard.
fn mappings(n: usize) -> Vec<Mapping> {
    (0..n)
        .map(|i| {
            let wildcard = i % 4 == 0;
            Mapping {
                id: i as u64,
                account_id: format!("acc{}", i % 100),
                name: format!("m{i}"),
                service_name: ["TEST_SERVICE", "IDP", "WEBHOOKS"][i % 3].to_string(),
                url: if wildcard {
                    format!("https://partner{i}.example/api/*")
                } else {
                    format!("https://partner{i}.example/api/v1/resource?x={i}")
                },
                certificate_id: i as u64,
                enabled: true,
                deleted: false,
                cutover_check: None,
            }
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in [100usize, 10_000, 100_000] {
        let maps = mappings(n);
        let (idx, errors) =
            MappingIndex::build(maps.iter(), &HashMap::<(String, u64), CertEntry>::new());
        assert!(errors.is_empty());
        let exact = maps[1].clone();
        let exact_url = normalize_url(&exact.url).unwrap_or_default();
        let wild = maps[0].clone();
        let wild_url = "https://partner0.example/api/some/deeper/path?q=1".to_string();
        assert!(idx
            .lookup(&exact.account_id, &exact.service_name, &exact_url)
            .is_some());
        assert!(idx
            .lookup(&wild.account_id, &wild.service_name, &wild_url)
            .is_some());
        g.bench_with_input(BenchmarkId::new("exact_hit", n), &n, |b, _| {
            b.iter(|| {
                idx.lookup(
                    black_box(&exact.account_id),
                    black_box(&exact.service_name),
                    black_box(&exact_url),
                )
                .is_some()
            })
        });
        g.bench_with_input(BenchmarkId::new("wildcard_hit", n), &n, |b, _| {
            b.iter(|| {
                idx.lookup(
                    black_box(&wild.account_id),
                    black_box(&wild.service_name),
                    black_box(&wild_url),
                )
                .is_some()
            })
        });
        let miss = "https://nobody.example/api/v1/resource?x=1";
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| {
                idx.lookup(black_box("acc1"), black_box("IDP"), black_box(miss))
                    .is_none()
            })
        });
        // The peer: what a naive gateway does, a scan over every mapping (exact or prefix).
        let flat: Vec<(String, String, String, bool)> = maps
            .iter()
            .map(|m| {
                let wild = m.url.ends_with('*');
                let u = normalize_url(m.url.trim_end_matches('*')).unwrap_or_default();
                (m.account_id.clone(), m.service_name.clone(), u, wild)
            })
            .collect();
        // Both look up the last mapping (the scan's worst case, the index's usual case).
        let last = maps[n - 1].clone();
        let last_url = normalize_url(&last.url).unwrap_or_default();
        g.bench_with_input(BenchmarkId::new("index_last_hit", n), &n, |b, _| {
            b.iter(|| {
                idx.lookup(
                    black_box(&last.account_id),
                    &last.service_name,
                    black_box(&last_url),
                )
                .is_some()
            })
        });
        g.bench_with_input(BenchmarkId::new("naive_scan_last_hit", n), &n, |b, _| {
            b.iter(|| {
                flat.iter().any(|(a, s, u, wild)| {
                    a == black_box(&last.account_id)
                        && s == &last.service_name
                        && if *wild {
                            last_url.starts_with(u.as_str())
                        } else {
                            *u == last_url
                        }
                })
            })
        });
        // Normalising the request URL is part of every lookup on the request path.
        g.bench_with_input(
            BenchmarkId::new("normalize_and_exact_hit", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let u = normalize_url(black_box(&exact.url)).unwrap_or_default();
                    idx.lookup(&exact.account_id, &exact.service_name, &u)
                        .is_some()
                })
            },
        );
    }
    g.finish();
}

fn bench_ratelimit(c: &mut Criterion) {
    let rl = RateLimiter::new(&RateLimitConfig {
        enabled: true,
        requests_per_second: 1_000_000_000,
        trusted_proxies: vec![],
        forwarded_header: "x-forwarded-for".into(),
        expected_clients: 100_000,
        fleet: RateLimitFleetConfig::defaults(1_000_000_000, 3),
    });
    let ips: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()))
        .collect();
    let mut g = c.benchmark_group("ratelimit");
    let mut i = 0usize;
    g.bench_function("observe", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            rl.allow(black_box(&ips[i]))
        })
    });
    // The fleet tier (rate_limit.fleet, over an in-process counter): a cold client (below the
    // local allowance: sketch only, no lock) and a hot one (past it: its lease under a shard lock;
    // claims are rare with a large chunk, and sent by the background thread anyway).
    let fleet_cfg = |allowance: u32, chunk: u32| RateLimitConfig {
        enabled: true,
        requests_per_second: 1_000_000_000,
        trusted_proxies: vec![],
        forwarded_header: "x-forwarded-for".into(),
        expected_clients: 100_000,
        fleet: RateLimitFleetConfig {
            local_allowance: allowance,
            chunk,
            ..RateLimitFleetConfig::defaults(1_000_000_000, 3)
        },
    };
    let counter = Arc::new(MemoryCounter::new());
    let cold = RateLimiter::with_fleet(&fleet_cfg(1_000_000_000, 1), counter.clone());
    g.bench_function("observe_fleet_cold", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            cold.allow(black_box(&ips[i]))
        })
    });
    let hot = RateLimiter::with_fleet(&fleet_cfg(1, 1_000_000), counter);
    g.bench_function("observe_fleet_hot", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            hot.allow(black_box(&ips[i]))
        })
    });
    // Once per second the request that crosses into a new window clears the previous window's
    // sketch (pingora_limits::rate::Rate::maybe_reset): 4 rows x 2 x expected_clients counters.
    let slots = (100_000usize * 2).next_power_of_two();
    let est = pingora_limits::estimator::Estimator::new(4, slots);
    g.bench_function("window_reset_100k_clients", |b| b.iter(|| est.reset()));
    g.finish();
}

fn bench_p12(c: &mut Criterion) {
    let ca = certgen::new_ca("bench CA").expect("ca");
    let client = certgen::issue(&ca, &Leaf::client("bench")).expect("client");
    let p12 = certgen::to_p12(&client.cert, &client.key, &[], "pw").expect("p12");
    let mut g = c.benchmark_group("p12");
    g.bench_function("decode_per_certificate", |b| {
        b.iter(|| mtls_gateway::p12::decode(black_box(&p12), "pw").is_ok())
    });
    g.finish();
}

fn bench_refresh(c: &mut Criterion) {
    if std::env::var_os("MICRO_QUICK").is_some() {
        return;
    }
    const N: u64 = 10_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(FileStore::open(dir.path().to_path_buf()).expect("store"));
    let ca = certgen::new_ca("bench CA").expect("ca");
    // One key pair reused across certificates keeps seeding fast; decode cost is per file.
    let client = certgen::issue(&ca, &Leaf::client("bench")).expect("client");
    let p12 = certgen::to_p12(&client.cert, &client.key, &[], "pw").expect("p12");
    rt.block_on(async {
        for i in 0..N {
            let account = format!("acc{}", i % 100);
            store
                .put_certificate(&StoredCertificate {
                    meta: CertificateMeta {
                        id: i,
                        account_id: account.clone(),
                        name: format!("c{i}"),
                        display_name: format!("c{i}"),
                        deleted: false,
                        not_after: None,
                        updated_at: 0,
                    },
                    secret: CertificateSecret {
                        p12: p12.clone(),
                        password: "pw".into(),
                    },
                    lifecycle: None,
                })
                .await
                .expect("put");
        }
        let maps = mappings(N as usize);
        let mut by_account: HashMap<String, Vec<Mapping>> = HashMap::new();
        for m in maps {
            by_account.entry(m.account_id.clone()).or_default().push(m);
        }
        for (a, ms) in by_account {
            store
                .put_mappings(&a, &MappingDocument { mappings: ms }, None)
                .await
                .expect("maps");
        }
    });
    let cfg = RefreshConfig {
        interval: Duration::from_secs(300),
        retry_min: Duration::from_millis(500),
        retry_max: Duration::from_secs(60),
    };
    let mut g = c.benchmark_group("refresh_10k");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("full", |b| {
        b.iter(|| {
            // A new refresher has no previous snapshot: everything is read and decoded.
            let r = Refresher::new(store.clone(), cfg.clone());
            let rep = rt.block_on(r.refresh()).expect("refresh");
            assert_eq!(rep.certificates_read as u64, N);
        })
    });
    let warm = Refresher::new(store.clone(), cfg.clone());
    rt.block_on(warm.refresh()).expect("first");
    g.bench_function("unchanged", |b| {
        b.iter(|| {
            let rep = rt.block_on(warm.refresh()).expect("refresh");
            assert_eq!(rep.certificates_read, 0);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_lookup,
    bench_ratelimit,
    bench_p12,
    bench_refresh
);
criterion_main!(benches);
