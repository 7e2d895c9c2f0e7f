//! In-process workers: claim a job under a lease, run the generator on a blocking thread
//! while this task stores progress and renews the lease, encode, upload, complete, notify.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_jobs::{HeartbeatOutcome, Job, JobError, JobState, Progress as StoredProgress};
use kiln_media::image_in::FetchLimits;
use kiln_media::video_out::{
    clip_frame, encode_poster_jpeg, encode_video, write_atomically, EncodeOptions,
};
use kiln_pipeline::Progress;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::address::image_address_policy;
use crate::conditions::{generate_request, load_request_conditions};
use crate::files::FileStore;
use crate::generator::{GenerateError, GeneratedClip};
use crate::request::ResolvedRequest;
use crate::AppState;

pub const PHASE_ENCODING_PROMPT: &str = "encoding prompt";
pub const PHASE_DENOISING: &str = "denoising";
pub const PHASE_DECODING: &str = "decoding";
pub const PHASE_ENCODING_VIDEO: &str = "encoding video";
pub const PHASE_UPLOADING: &str = "uploading";

/// Progress as the blocking thread reports it, already counted across results.
struct StepReport {
    progress: StoredProgress,
    step_seconds: Option<f64>,
}

/// How a run ended before completion.
enum Stop {
    Cancelled,
    LostLease,
    Failed(String),
}

pub async fn run_worker(state: AppState, slot: usize, mut shutdown: watch::Receiver<bool>) {
    let worker_id = format!("{}-{slot}-{}", std::process::id(), uuid::Uuid::new_v4());
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.store.claim(&worker_id, state.config.lease).await {
            Ok(Some(job)) => run_job(&state, &worker_id, job).await,
            Ok(None) => {
                tokio::select! {
                    _ = state.work_ready.notified() => {}
                    _ = tokio::time::sleep(state.config.idle_poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(worker = %worker_id, "cannot claim a job: {e}");
                tokio::time::sleep(state.config.idle_poll).await;
            }
        }
    }
}

async fn run_job(state: &AppState, worker_id: &str, job: Job) {
    let started = Instant::now();
    let id = job.id.clone();
    tracing::info!(job = %id, worker = %worker_id, "running");
    let outcome = match serde_json::from_value::<ResolvedRequest>(job.request.clone()) {
        Ok(request) => execute(state, worker_id, &id, &request, started).await,
        Err(e) => Err(Stop::Failed(format!(
            "the stored request cannot be read ({e}); it was written by another kiln version, submit it again"
        ))),
    };
    let ended = match outcome {
        Ok((result, ttl)) => state.store.complete(&id, worker_id, &result, ttl).await,
        Err(Stop::Cancelled) => state.store.mark_cancelled(&id, worker_id).await,
        Err(Stop::Failed(message)) => state.store.fail(&id, worker_id, &message).await,
        Err(Stop::LostLease) => Err(JobError::LostLease {
            id: id.clone(),
            worker_id: worker_id.to_string(),
        }),
    };
    match ended {
        Ok(()) => notify(state, &id).await,
        Err(JobError::LostLease { .. }) => {
            tracing::warn!(job = %id, "lease lost; output dropped");
            delete_outputs(state, &id).await;
        }
        Err(e) => tracing::error!(job = %id, "cannot record the job's end: {e}"),
    }
}

async fn notify(state: &AppState, id: &str) {
    if let Ok(Some(job)) = state.store.get(id, None).await {
        if job.state != JobState::Succeeded {
            delete_outputs(state, id).await;
        }
        crate::dialects::spawn_job_webhook(state, &job);
    }
}

async fn delete_outputs(state: &AppState, id: &str) {
    let prefix = format!("{id}_");
    let Ok(mut entries) = tokio::fs::read_dir(state.files.root()).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(&prefix) {
            let _ = state.files.delete(&name).await;
        }
    }
}

/// Runs the request; the result JSON and the outputs' TTL on success.
async fn execute(
    state: &AppState,
    worker_id: &str,
    id: &str,
    request: &ResolvedRequest,
    started: Instant,
) -> Result<(Value, Duration), Stop> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel::<StepReport>();
    let generator = state.generator.clone();
    let run_request = request.clone();
    let run_stop = stop.clone();
    let mut limits = FetchLimits::default();
    if !state.config.allow_private_addresses {
        limits.address_policy = Some(image_address_policy());
    }
    let mut task = crate::priority::spawn_compute(move || {
        run_generation(generator.as_ref(), &run_request, &limits, &run_stop, &tx)
    })
    .map_err(|e| Stop::Failed(format!("cannot start a generation thread: {e}")))?;

    // Supervise until the blocking run ends: store progress, renew the lease, pass cancels.
    let mut heartbeat = tokio::time::interval(state.config.heartbeat_interval);
    heartbeat.tick().await;
    let mut cancelled = false;
    let mut lost = false;
    let joined = loop {
        tokio::select! {
            // Reports first: a finished run must not drop the progress still queued.
            biased;
            Some(report) = rx.recv() => {
                let latest = latest_report(state, report, &mut rx);
                if state.store.set_progress(id, worker_id, &latest).await.is_err() {
                    lost = true;
                    stop.store(true, Ordering::SeqCst);
                }
                // A lease check per report makes cancel take effect at the next step.
                check_lease(state, worker_id, id, &stop, &mut cancelled, &mut lost).await;
            }
            joined = &mut task => break joined,
            _ = heartbeat.tick() => {
                check_lease(state, worker_id, id, &stop, &mut cancelled, &mut lost).await;
            }
        }
    };
    let generated = match joined {
        Ok(Ok(clips)) => clips,
        Ok(Err(GenerateError::Cancelled)) if lost => return Err(Stop::LostLease),
        Ok(Err(GenerateError::Cancelled)) => return Err(Stop::Cancelled),
        Ok(Err(GenerateError::Failed(m))) => return Err(Stop::Failed(m)),
        Err(_) => return Err(Stop::Failed("the generation thread crashed".into())),
    };
    if lost {
        return Err(Stop::LostLease);
    }
    if cancelled {
        return Err(Stop::Cancelled);
    }
    let generate_seconds = started.elapsed().as_secs_f64();

    let total_steps = request.steps as u32 * request.number_results;
    set_final_phase(state, id, worker_id, total_steps, PHASE_ENCODING_VIDEO).await;
    let encode_start = Instant::now();
    let files = state.files.clone();
    let job_id = id.to_string();
    let encode_request = request.clone();
    let mut encode = crate::priority::spawn_compute(move || {
        encode_outputs(&files, &job_id, &encode_request, &generated)
    })
    .map_err(|e| Stop::Failed(format!("cannot start an encoding thread: {e}")))?;
    // Encoding a long clip can outlast a lease: keep renewing it.
    let encoded = loop {
        tokio::select! {
            done = &mut encode => break done,
            _ = heartbeat.tick() => {
                check_lease(state, worker_id, id, &stop, &mut cancelled, &mut lost).await;
            }
        }
    };
    let outputs = match encoded {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(m)) => return Err(Stop::Failed(m)),
        Err(_) => return Err(Stop::Failed("the encoding thread crashed".into())),
    };
    let encode_seconds = encode_start.elapsed().as_secs_f64();
    check_lease(state, worker_id, id, &stop, &mut cancelled, &mut lost).await;
    if lost {
        return Err(Stop::LostLease);
    }
    if cancelled {
        return Err(Stop::Cancelled);
    }

    let base = state
        .config
        .public_url
        .as_deref()
        .or(request.base_url.as_deref())
        .unwrap_or("")
        .trim_end_matches('/');
    let output_json: Vec<Value> = outputs
        .iter()
        .map(|o| {
            json!({
                "url": format!("{base}/files/{}", o.key),
                "key": o.key,
                "content_type": o.content_type,
                "poster_url": format!("{base}/files/{}", o.poster_key),
                "poster_key": o.poster_key,
                "width": o.width,
                "height": o.height,
                "frames": o.frames,
                "fps": request.fps,
                "seconds": o.seconds,
                "seed": o.seed,
                "size_bytes": o.size_bytes,
            })
        })
        .collect();
    let mut result = json!({
        "outputs": output_json,
        "seed": request.seed,
    });

    let mut upload_seconds = 0.0;
    if let (Some(url), Some(first)) = (&request.upload_endpoint, outputs.first()) {
        set_final_phase(state, id, worker_id, total_steps, PHASE_UPLOADING).await;
        let upload_start = Instant::now();
        let upload = match state.files.path(&first.key) {
            Some(path) => match tokio::fs::read(&path).await {
                Ok(bytes) => state.delivery.upload(url, bytes, first.content_type).await,
                Err(e) => Err(format!("cannot read the output to upload: {e}")),
            },
            None => Err("the output key is not a valid file name".to_string()),
        };
        upload_seconds = upload_start.elapsed().as_secs_f64();
        // The clip exists either way; a failed upload is reported, not a failed job.
        result["upload"] = match upload {
            Ok(status) => json!({ "url": url, "ok": true, "status": status }),
            Err(error) => json!({ "url": url, "ok": false, "error": error }),
        };
    }

    let compute_seconds = started.elapsed().as_secs_f64();
    result["timings"] = json!({
        "generate_seconds": generate_seconds,
        "encode_seconds": encode_seconds,
        "upload_seconds": upload_seconds,
        "total_seconds": compute_seconds,
    });
    if request.include_cost {
        let prices = &state.config.prices;
        let output_seconds: f64 = outputs.iter().map(|o| o.seconds).sum();
        let amount = output_seconds * prices.per_output_second
            + (generate_seconds + encode_seconds) * prices.per_compute_second;
        result["cost"] = json!({
            "amount": amount,
            "currency": prices.currency,
            "output_seconds": output_seconds,
            "compute_seconds": generate_seconds + encode_seconds,
        });
    }
    Ok((result, Duration::from_secs(request.ttl_seconds)))
}

/// Counts every queued report in the metrics and returns the newest: a store write per
/// report would fall behind fast steps, and only the latest progress is kept anyway.
fn latest_report(
    state: &AppState,
    first: StepReport,
    rx: &mut mpsc::UnboundedReceiver<StepReport>,
) -> StoredProgress {
    let mut latest = first;
    loop {
        if let Some(s) = latest.step_seconds {
            state.metrics.observe_step(s);
        }
        match rx.try_recv() {
            Ok(next) => latest = next,
            Err(_) => return latest.progress,
        }
    }
}

async fn check_lease(
    state: &AppState,
    worker_id: &str,
    id: &str,
    stop: &AtomicBool,
    cancelled: &mut bool,
    lost: &mut bool,
) {
    match state
        .store
        .heartbeat(id, worker_id, state.config.lease)
        .await
    {
        Ok(HeartbeatOutcome::Continue) => {}
        Ok(HeartbeatOutcome::CancelRequested) => {
            *cancelled = true;
            stop.store(true, Ordering::SeqCst);
        }
        Ok(HeartbeatOutcome::LostLease) | Err(JobError::LostLease { .. }) => {
            *lost = true;
            stop.store(true, Ordering::SeqCst);
        }
        // A transient store error: the lease still has time; try again next tick.
        Err(e) => tracing::warn!(job = %id, "heartbeat failed: {e}"),
    }
}

/// On the blocking thread: images in, then each result in turn.
fn run_generation(
    generator: &dyn crate::VideoGenerator,
    request: &ResolvedRequest,
    limits: &FetchLimits,
    stop: &AtomicBool,
    reports: &mpsc::UnboundedSender<StepReport>,
) -> Result<Vec<GeneratedClip>, GenerateError> {
    let conditions = load_request_conditions(request, limits).map_err(GenerateError::Failed)?;
    let steps = request.steps as u32;
    let total = steps * request.number_results;
    let mut clips = Vec::with_capacity(request.number_results as usize);
    for index in 0..request.number_results {
        let pipeline_request = generate_request(request, &conditions, index);
        let done_before = index * steps;
        let mut on_progress = |p: Progress| {
            let (phase, step, step_seconds) = match p {
                Progress::EncodingPrompt => (PHASE_ENCODING_PROMPT, done_before, None),
                Progress::Denoising { step, seconds, .. } => {
                    (PHASE_DENOISING, done_before + step as u32, Some(seconds))
                }
                Progress::Decoding => (PHASE_DECODING, done_before + steps, None),
            };
            let _ = reports.send(StepReport {
                progress: StoredProgress {
                    step,
                    steps: total,
                    phase: phase.to_string(),
                },
                step_seconds,
            });
            !stop.load(Ordering::SeqCst)
        };
        clips.push(generator.generate(&pipeline_request, &mut on_progress)?);
    }
    Ok(clips)
}

struct EncodedOutput {
    key: String,
    poster_key: String,
    content_type: &'static str,
    width: usize,
    height: usize,
    frames: usize,
    seconds: f64,
    seed: u64,
    size_bytes: usize,
}

/// On a blocking thread: each clip to `<key>` and a JPEG poster of its first frame.
fn encode_outputs(
    files: &FileStore,
    job_id: &str,
    request: &ResolvedRequest,
    clips: &[GeneratedClip],
) -> Result<Vec<EncodedOutput>, String> {
    let format = request.output_format.video_format();
    let options = EncodeOptions {
        format,
        fps: request.fps,
        quality: request.output_quality,
    };
    let mut outputs = Vec::with_capacity(clips.len());
    for (index, clip) in clips.iter().enumerate() {
        let index = index as u32;
        let key = FileStore::key(job_id, index, format.extension());
        let poster_key = FileStore::key(job_id, index, "jpg");
        let (Some(path), Some(poster_path)) = (files.path(&key), files.path(&poster_key)) else {
            return Err(format!("job id {job_id} does not make a valid file name"));
        };
        let encoding =
            |e: kiln_media::video_out::VideoError| format!("encoding the video failed: {e}");
        let bytes = encode_video(&clip.rgb, clip.frames, clip.width, clip.height, &options)
            .map_err(encoding)?;
        write_atomically(&path, &bytes).map_err(encoding)?;
        let frame =
            clip_frame(&clip.rgb, clip.frames, clip.width, clip.height, 0).map_err(encoding)?;
        let poster = encode_poster_jpeg(frame, clip.width, clip.height, 90).map_err(encoding)?;
        write_atomically(&poster_path, &poster).map_err(encoding)?;
        outputs.push(EncodedOutput {
            key,
            poster_key,
            content_type: format.mime_type(),
            width: clip.width,
            height: clip.height,
            frames: clip.frames,
            // Each frame lasts 1/fps in the file.
            seconds: clip.frames as f64 / f64::from(request.fps.max(1)),
            seed: request.seed.wrapping_add(u64::from(index)),
            size_bytes: bytes.len(),
        });
    }
    Ok(outputs)
}

/// Records a post-generation phase at full step count. A failed write only loses a progress
/// report; the job's outcome is written later and is what matters.
async fn set_final_phase(
    state: &AppState,
    id: &str,
    worker_id: &str,
    total_steps: u32,
    phase: &str,
) {
    let _ = state
        .store
        .set_progress(
            id,
            worker_id,
            &StoredProgress {
                step: total_steps,
                steps: total_steps,
                phase: phase.into(),
            },
        )
        .await;
}
