"""The live app as one object: what `edgedet run` and the Python API (`edgedet.stream`) start.

Start-up order: sources, model (one interpreter per Edge TPU; object stages once its labels are
known), warm-up inference, the float-reference check on the bundle's samples (it may fall back to
the float model at once), web view, then READY=1 to systemd and the threads.
"""

import logging

from app.inference import devices, runtime, workers
from app.tracking import objects
from app.outputs.recordings import clips, recent, snapshots
from app.outputs.mqtt import sink as mqtt, settings as mqtt_settings
from app.outputs import overlay, sinks, webview
from app import service
from app.errors import UserError
from app.pipeline.threads import Pipeline
from app.redact import redact
from app.capture.sources import open_source
from app.pipeline.stats import Stats

log = logging.getLogger("edgedet")


def open_sources(app_cfg):
    """Opens every --source; a name used twice gets "#2", "#3"... so stats and events stay apart."""
    sources, seen = [], {}
    for i, spec in enumerate(app_cfg.sources):
        source = open_source(spec, app_cfg.loop, app_cfg.realtime, seed=i, timeout_s=app_cfg.source_timeout_s)
        seen[source.name] = seen.get(source.name, 0) + 1
        if seen[source.name] > 1:
            source.name = "{}#{}".format(source.name, seen[source.name])
        sources.append(source)
    return sources


def _sinks(app_cfg, stats, stop):
    result = []
    if app_cfg.events:
        result.append(sinks.EventWriter(app_cfg.events))
    if app_cfg.stats:
        result.append(sinks.StatsWriter(app_cfg.stats, stats))
    if not app_cfg.headless and overlay.display_available():
        result.append(overlay.PreviewWindow(stop))
    elif not app_cfg.headless:
        log.info("no DISPLAY: running headless")
    return result


def _recorder_sections(cfg):
    """(section, key, sink class) of the snapshot and clip sinks."""
    return ((cfg.snapshots, "snapshots", snapshots.Snapshots), (cfg.clips, "clips", clips.ClipRecorder))


def _check_recorders(cfg, where):
    """UserError for an enabled snapshots/clips section without objects, or a bad key or folder (at start)."""
    for section, key, make in _recorder_sections(cfg):
        if section.enabled and not cfg.objects.enabled:
            raise UserError("{}: {}.enabled needs objects.enabled (it saves tracked objects); turn objects "
                            "on or {} off".format(where, key, key))
        if section.enabled:
            make.check(section, where)


def _recorders(cfg, where):
    """The snapshot and clip sinks that are on. They go FIRST among the sinks: the snapshot sink fills
    the object events' `snapshot` field before the other sinks read them."""
    return [make(section, where) for section, _, make in _recorder_sections(cfg) if section.enabled]


def _web_view_address(http_cfg):
    """(host, port, secret or None) of http.listen, read before anything starts; None when it is off."""
    if not http_cfg.listen:
        return None
    host, port = webview.parse_listen(http_cfg.listen)
    secret = webview.read_credentials(http_cfg.credentials_file) if http_cfg.credentials_file else None
    webview.check_exposure(host, port, secret, http_cfg.insecure)
    return host, port, secret


def _web_view(address, http_cfg, feed, stats, objects):
    """The started WebView at `address` (from _web_view_address); `objects` is its RecentEvents."""
    host, port, secret = address
    view = webview.WebView(host, port, feed.get_jpeg, stats.snapshot, stats.last_frame_time,
                           credentials=secret, insecure=http_cfg.insecure, get_events=objects.items,
                           snapshot_dir=objects.snapshot_dir)
    return view.start()


def _log_start(engines, sources):
    log.info("%s", runtime.describe(engines[0]))
    tpus = devices.list_edgetpus()
    log.info("Edge TPUs found: %s", ", ".join("{} {}".format(t["type"], t["path"]) for t in tpus) or "none")
    log.info("sources: %s", ", ".join(redact(s.name) for s in sources))


def _reference_guard(cfg, live, stats):
    """A ReferenceGuard when the check applies (bundle, enabled, live model not float), else None."""
    engine, worker = live.pairs[0]
    if not cfg.reference.enabled or live.bundle is None or worker.model == "float":
        return None
    return service.ReferenceGuard(live.bundle, live.thresholds, engine, worker.model, cfg.reference,
                                  cfg.app.num_threads, stats)



class LiveApp(object):
    """Sources, live model, sinks, reference guard, web view and pipeline, built from settings.

    Args:
      cfg: app.config.DeviceConfig with the command-line flags applied.
      overrides: decode threshold overrides (app.cli.resolve_settings).
      config_path: the config file name for messages.
      extra_sinks: more pipeline sinks, placed before the systemd notifier (the Python API's).

    Raises:
      UserError: bad input found at start-up (a source, the model, a zone, ...).
    """

    def __init__(self, cfg, overrides, config_path="<defaults>", extra_sinks=()):
        app_cfg = cfg.app
        if app_cfg.max_frames < 0:
            raise UserError("--max-frames must be >= 0 (0 = run forever), got {}".format(app_cfg.max_frames))
        self._address = _web_view_address(cfg.http)  # credentials and exposure before any output
        _check_recorders(cfg, config_path)  # snapshot and clip folders too
        self._mqtt_password = mqtt_settings.check_settings(cfg.mqtt, config_path) if cfg.mqtt.enabled else None
        # Sources first: a camera that is not there is the cheaper mistake to report.
        self.sources = open_sources(app_cfg)
        self._cfg, self._config_path, self._stages = cfg, config_path, None
        self.live = workers.LiveModel(app_cfg, overrides, before_open=self._build_stages)
        engines = [e for e, _ in self.live.pairs]
        where = "Edge TPU" if engines[0].kind == "edgetpu" else "CPU"
        self.stats = Stats("{} {} {}".format(engines[0].runtime.name, engines[0].runtime.version, where),
                           self.live.pairs[0][1].model, engines[0].num_threads)
        _log_start(engines, self.sources)
        for _, worker in self.live.pairs:
            workers.warm_up(worker)
        self.pipeline = self._build_pipeline(list(extra_sinks))
        self._view, self._started = None, False

    def _build_stages(self, labels):
        names = [labels.get(i, str(i)) for i in range(max(labels) + 1)]  # Coral label files skip ids
        self._stages = objects.build_stages(self._cfg.objects, self.sources, self._cfg.app.sources, names,
                                            self._config_path)

    def _build_pipeline(self, extra_sinks):
        cfg, stats = self._cfg, self.stats
        recorders = _recorders(cfg, self._config_path)  # first: they fill the events' snapshot field
        sink_list = recorders + _sinks(cfg.app, stats, self.stop)
        sink_list += mqtt.open_sinks(cfg.mqtt, self._mqtt_password, self._stages, self.sources, cfg.app.sources,
                                     self.live.labels, stats, self._config_path)
        self._feed = service.FrameFeed(overlay.draw_result, lambda: overlay.hud_text(stats)) if cfg.http.listen else None
        folder = next((r.folder for r in recorders if isinstance(r, snapshots.Snapshots)), None)
        self._recent = recent.RecentEvents(folder) if cfg.http.listen else None
        self.guard = _reference_guard(cfg, self.live, stats)
        self.notifier = service.SystemdNotifier(stats)
        sink_list += [s for s in (self._feed, self._recent, self.guard) if s is not None] + extra_sinks + [self.notifier]  # LAST
        app_cfg = cfg.app
        pipeline = Pipeline(self.sources, [w for _, w in self.live.pairs], self.live.labels, sink_list, stats,
                            app_cfg.max_frames, hud=overlay.hud_text, draw=overlay.draw_result,
                            source_timeout_s=app_cfg.source_timeout_s, invoke_timeout_s=app_cfg.invoke_timeout_s,
                            rebuild=self.live.rebuild, objects=self._stages)
        for recorder in recorders:
            if hasattr(recorder, "attach"):
                recorder.attach(pipeline)  # clip events are status events
        return pipeline

    def start(self):
        """The start-up reference check, the web view, READY=1 and the threads.

        Returns:
          False when the start-up check asked to exit (nothing was started), else True.
        """
        if self.guard is not None:
            self.guard.attach(self.pipeline)
            self.guard.run_startup(self.live.pairs[0][1])
            if self.guard.exit_requested:
                return False
        self._view = _web_view(self._address, self._cfg.http, self._feed, self.stats, self._recent) \
            if self._feed is not None else None
        self.notifier.ready("started: model {} | {} | {} source(s)".format(self.stats.model, self.stats.runtime,
                                                                          len(self.sources)))
        self._started = True
        self.pipeline.start()
        if self.guard is not None:
            self.guard.start()
        return True

    def wait(self):
        """Blocks until the pipeline finished (out of frames, max_frames, stop())."""
        self.pipeline.wait()

    def stop(self):
        """Asks every thread to finish; safe from signal handlers and sinks."""
        self.pipeline.stop()

    def close(self):
        """Stops and joins everything; returns the process exit code."""
        if self._started:
            self.notifier.stopping()
            if self.guard is not None:
                self.guard.join(0.5)
        self.pipeline.join()
        if self._view is not None:
            self._view.stop(0.5)
        if not self._started:
            return service.EXIT_REFERENCE_MISMATCH if self.guard is not None and self.guard.exit_requested else 0
        log.info("stopped after %d frames", self.pipeline.processed)
        exit_requested = self.guard is not None and self.guard.exit_requested
        return self.pipeline.exit_code or (service.EXIT_REFERENCE_MISMATCH if exit_requested else 0)
