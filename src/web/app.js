// The robustd dashboard: models, evaluations with live progress, reports and a gallery of
// adversarial examples. Plain JavaScript with no build step; every figure comes from the API.
"use strict";

(() => {
  const TOKEN_KEY = "robustd.token";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ---- DOM ---------------------------------------------------------------------------------

  /** An element with attributes and children; strings become text, never markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function setAttributes(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const $ = (selector, root = document) => root.querySelector(selector);

  // ---- Formatting --------------------------------------------------------------------------

  const pct = (v, digits = 1) =>
    v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)}%`;
  const ci = (p) => `95% CI ${pct(p.ci95[0])} – ${pct(p.ci95[1])}`;
  const num = (v, digits = 3) =>
    v === null || v === undefined ? "–" : String(Number(v.toPrecision(digits)));
  const when = (seconds) => new Date(seconds * 1000).toLocaleString();
  const shortId = (id) => id.slice(0, 8);
  const path = (...parts) => parts.map(encodeURIComponent).join("/");

  function ago(seconds) {
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 60) return "just now";
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function badge(status, text) {
    return el("span", { class: `badge ${status}` }, text || status);
  }

  /** One attack of a plan in a few words: "PGD linf ε 0.1, 10 steps". */
  function describeAttack(a) {
    const steps = a.method === "fgsm" || a.method === "noise" ? "" : `, ${a.steps} steps`;
    const extras = [];
    if (a.restarts > 1) extras.push(`${a.restarts} restarts`);
    if (a.targeted) extras.push("targeted");
    if (a.loss) extras.push(`${a.loss} loss`);
    const tail = extras.length ? `, ${extras.join(", ")}` : "";
    return `${a.method.toUpperCase()} ${a.norm} ε ${num(a.eps)}${steps}${tail}`;
  }

  function describePlan(plan) {
    return plan.attacks.map(describeAttack).join(" then ");
  }

  // ---- Connection and token ----------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  class Offline extends Error {}

  const connection = {
    online: true,
    timer: null,
    lost() {
      if (!this.online) return;
      this.online = false;
      showBanner(
        "Lost the connection to the server. Retrying every few seconds; the page updates when it answers again.",
      );
      this.timer = setInterval(probe, 3000);
    },
    back() {
      if (this.online) return;
      this.online = true;
      clearInterval(this.timer);
      hideBanner();
      route();
    },
  };

  async function probe() {
    try {
      await fetch("/v2/health/live", { cache: "no-store" });
      connection.back();
    } catch {
      // Still away.
    }
  }

  function showBanner(text) {
    const banner = $("#banner");
    banner.textContent = text;
    banner.hidden = false;
  }

  function hideBanner() {
    $("#banner").hidden = true;
  }

  function authHeaders() {
    const token = localStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function askForToken(reason) {
    const form = $("#token-form");
    $("#token-reason").textContent = reason || "This server asks for a token.";
    form.hidden = false;
    $("#token-input").focus();
  }

  function setUpTokenForm() {
    const form = $("#token-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("#token-input").value.trim();
      if (token) localStorage.setItem(TOKEN_KEY, token);
      $("#token-input").value = "";
      form.hidden = true;
      route();
    });
    $("#token-clear").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      form.hidden = true;
      route();
    });
    $("#token-button").addEventListener("click", () => {
      const stored = localStorage.getItem(TOKEN_KEY);
      askForToken(
        stored ? "A token is stored; enter another or forget it." : "No token is stored.",
      );
    });
  }

  /** A call to the API: the stored token, the API's error body as the message, 401 asks. */
  async function api(url, { method = "GET", body, raw = false, signal } = {}) {
    const headers = authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      connection.lost();
      throw new Offline("the server does not answer");
    }
    connection.back();
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // Not the API's JSON error body.
      }
      if (response.status === 401) {
        askForToken(`${message}. Enter a token to go on.`);
      }
      throw new HttpError(response.status, message);
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  /**
   * Follows an evaluation's Server-Sent Events. fetch rather than EventSource, so that the
   * request carries the token. Calls `onEvent({id, event, data})`; a true answer ends it.
   * Returns a function that stops it.
   */
  function followEvents(id, onEvent) {
    const controller = new AbortController();
    let stopped = false;
    let lastId = 0;
    const stop = () => {
      stopped = true;
      controller.abort();
    };
    (async () => {
      while (!stopped) {
        try {
          const headers = { ...authHeaders(), Accept: "text/event-stream" };
          if (lastId) headers["Last-Event-ID"] = String(lastId);
          const response = await fetch(`/v2/evaluations/${path(id)}/events`, {
            headers,
            signal: controller.signal,
            cache: "no-store",
          });
          connection.back();
          if (response.status === 401) {
            askForToken("The progress stream asks for a token.");
            return;
          }
          if (!response.ok) throw new HttpError(response.status, response.statusText);
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true }).replace(/\r/g, "");
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const event = parseEvent(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 2);
              if (!event) continue;
              if (event.id) lastId = Number(event.id);
              if (onEvent(event)) {
                stop();
                return;
              }
            }
          }
        } catch (error) {
          if (stopped || error.name === "AbortError") return;
          if (!(error instanceof HttpError)) {
            connection.lost();
            // A restarted server numbers a resumed job's events afresh; each event is a full
            // snapshot, so hearing them again is harmless and missing them is not.
            lastId = 0;
          }
        }
        await sleep(connection.online ? 500 : 3000);
      }
    })();
    return stop;
  }

  function parseEvent(block) {
    const event = { id: null, event: "message", data: "" };
    let seen = false;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") event.data += (event.data ? "\n" : "") + value;
      else if (field === "event") event.event = value;
      else if (field === "id") event.id = value;
      seen = true;
    }
    if (!seen || !event.data) return null;
    try {
      event.data = JSON.parse(event.data);
    } catch {
      return null;
    }
    return event;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- Tensors -----------------------------------------------------------------------------

  /** The tensors of a safetensors file, as {name: {shape, values}} with plain number arrays. */
  function readSafetensors(buffer) {
    const view = new DataView(buffer);
    const headerLength = Number(view.getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
    const base = 8 + headerLength;
    const tensors = {};
    for (const [name, info] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      const [from, to] = info.data_offsets;
      const bytes = buffer.slice(base + from, base + to);
      let values;
      if (info.dtype === "F32") values = Array.from(new Float32Array(bytes));
      else if (info.dtype === "I64") values = Array.from(new BigInt64Array(bytes), Number);
      else if (info.dtype === "F64") values = Array.from(new Float64Array(bytes));
      else throw new Error(`${name}: dtype ${info.dtype} is not shown here`);
      tensors[name] = { shape: info.shape, values };
    }
    return tensors;
  }

  // ---- Views -------------------------------------------------------------------------------

  let leaveView = () => {};
  let generation = 0;
  // The job this page just started: its view follows the events even if the job has already
  // ended, so that its progress is seen.
  let justStarted = null;

  /**
   * Shows the view the address names; stops what the last view left running. A view checks
   * `current()` after each wait, so that a slow answer never paints over a newer view.
   */
  function route() {
    leaveView();
    leaveView = () => {};
    const mine = ++generation;
    const current = () => mine === generation;
    const match = location.hash.match(/^#\/evaluations\/([A-Za-z0-9-]+)$/);
    const view = $("#view");
    const run = match ? showEvaluation(view, match[1], current) : showOverview(view, current);
    run.catch((error) => {
      if (current()) showError(view, error);
    });
  }

  function showError(view, error) {
    if (error.name === "AbortError") return;
    const text =
      error instanceof Offline
        ? "The server does not answer. This page tries again by itself."
        : error instanceof HttpError && error.status === 401
          ? "This server asks for a token (above)."
          : `Something went wrong: ${error.message}`;
    view.replaceChildren(el("div", { class: "notice error" }, text));
  }

  // ---- Overview: models, the start form, evaluations -----------------------------------------

  async function showOverview(view, current) {
    const [index, datasets, jobs] = await Promise.all([
      api("/v2/repository/index", { method: "POST" }),
      api("/v2/datasets"),
      api("/v2/evaluations"),
    ]);
    const models = await Promise.all(
      index.map(async (row) => ({ ...row, meta: await api(`/v2/models/${path(row.name)}`) })),
    );
    const latest = await latestReports(models, jobs);
    if (!current()) return;

    const jobsSection = el("section", { class: "panel", id: "evaluations" });
    const modelsSection = el("section", { class: "panel", id: "models" });
    const renderModels = (latestByModel) =>
      modelsSection.replaceChildren(...modelsView(models, latestByModel));
    renderModels(latest);
    renderJobs(jobsSection, jobs);
    view.replaceChildren(
      modelsSection,
      el("section", { class: "panel", id: "start" }, startForm(models, datasets)),
      jobsSection,
    );

    // Poll the list while something runs; when a job ends, its model's figures change too.
    let known = jobs;
    let timer = null;
    const poll = async () => {
      try {
        const fresh = await api("/v2/evaluations");
        const ended = fresh.some(
          (j) =>
            TERMINAL.has(j.status) && known.some((k) => k.id === j.id && !TERMINAL.has(k.status)),
        );
        const added = fresh.length !== known.length;
        known = fresh;
        renderJobs(jobsSection, fresh);
        // Models still loading when the page was drawn: their state may have changed.
        let loaded = false;
        if (models.some((m) => m.state === "LOADING")) {
          for (const row of await api("/v2/repository/index", { method: "POST" })) {
            const model = models.find((m) => m.name === row.name);
            if (model && model.state !== row.state) {
              Object.assign(model, { state: row.state, reason: row.reason });
              loaded = true;
            }
          }
        }
        if (ended || added || loaded) {
          const latestByModel = await latestReports(models, fresh);
          if (current()) renderModels(latestByModel);
        }
      } catch {
        // The banner or the token form says what happened.
      }
      if (!current()) return;
      const busy =
        known.some((j) => !TERMINAL.has(j.status)) || models.some((m) => m.state === "LOADING");
      timer = setTimeout(poll, busy ? 2000 : 10000);
    };
    timer = setTimeout(poll, 2000);
    leaveView = () => clearTimeout(timer);
  }

  /** The newest succeeded evaluation of each model, with its report. */
  async function latestReports(models, jobs) {
    const latest = {};
    await Promise.all(
      models.map(async (m) => {
        const job = jobs.find((j) => j.model === m.name && j.status === "succeeded");
        if (!job) return;
        try {
          latest[m.name] = await api(`/v2/evaluations/${path(job.id)}`);
        } catch {
          // The list still shows the job.
        }
      }),
    );
    return latest;
  }

  function modelsView(models, latest) {
    const heading = el("h2", {}, "Models");
    if (!models.length) {
      return [
        heading,
        el(
          "div",
          { class: "notice empty", id: "no-models" },
          el("strong", {}, "This server has no models yet. "),
          "Put a TorchScript file and its card (NAME.pt and NAME.json) in the server's models folder, or upload one with ",
          el("code", {}, "PUT /v2/repository/models/{name}"),
          " (see ",
          el("a", { href: "/docs" }, "the API"),
          ").",
        ),
      ];
    }
    return [
      heading,
      el(
        "div",
        { class: "models" },
        models.map((m) => modelCard(m, latest[m.name])),
      ),
    ];
  }

  function modelCard(model, latestJob) {
    const card = model.meta.card;
    const state =
      { READY: "ready", LOADING: "queued", UNAVAILABLE: "failed" }[model.state] || "skipped";
    const report = latestJob && latestJob.report;
    const summary = report && report.summary;

    const cleanFromCard = typeof card.clean_accuracy === "number" ? card.clean_accuracy : null;
    const clean =
      cleanFromCard !== null
        ? [pct(cleanFromCard), el("small", {}, " model card")]
        : summary && summary.clean_accuracy
          ? [pct(summary.clean_accuracy.value), el("small", {}, ` ${ci(summary.clean_accuracy)}`)]
          : ["–"];

    let robust = [el("span", { class: "muted" }, "no evaluation yet")];
    if (summary && summary.robust_accuracy) {
      robust = [
        el("span", { class: "figure-inline" }, pct(summary.robust_accuracy.value)),
        el("small", {}, ` ${ci(summary.robust_accuracy)}`),
        el("br"),
        el(
          "a",
          { href: `#/evaluations/${latestJob.id}` },
          `${describePlan(report.plan)} · ${summary.n} samples · ${ago(latestJob.updated_at)}`,
        ),
      ];
    } else if (summary) {
      robust = [
        `mean robust loss ${num(summary.mean_robust_loss)}`,
        el("br"),
        el("a", { href: `#/evaluations/${latestJob.id}` }, describePlan(report.plan)),
      ];
    }

    const facts = [
      ["task", card.task],
      ["input", `${card.input.shape.join(" × ")} in [${card.input.domain.join(", ")}]`],
    ];
    if (card.num_classes) facts.push(["classes", String(card.num_classes)]);
    if (card.normalization) {
      facts.push([
        "normalisation",
        `mean ${card.normalization.mean.join(", ")}, std ${card.normalization.std.join(", ")}`,
      ]);
    }
    for (const [key, value] of Object.entries(card)) {
      if (["name", "task", "input", "num_classes", "class_names", "normalization"].includes(key))
        continue;
      facts.push([
        key.replace(/_/g, " "),
        typeof value === "number"
          ? num(value, 4)
          : typeof value === "string"
            ? value
            : JSON.stringify(value),
      ]);
    }

    return el(
      "article",
      { class: "model", "data-model": model.name },
      el("header", {}, el("h3", {}, model.name), badge(state, model.state.toLowerCase())),
      model.reason ? el("p", { class: "notice error small" }, model.reason) : null,
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "sha256"),
        el("dd", { class: "mono sha", title: model.meta.sha256 }, model.meta.sha256),
        el("dt", {}, "clean accuracy"),
        el("dd", { class: "clean-accuracy" }, clean),
        el("dt", {}, "robust accuracy"),
        el("dd", { class: "robust-accuracy" }, robust),
      ),
      el(
        "details",
        { class: "card" },
        el("summary", {}, "Model card"),
        el(
          "dl",
          { class: "facts" },
          facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
        ),
      ),
    );
  }

  function renderJobs(section, jobs) {
    const heading = el("h2", {}, "Evaluations");
    if (!jobs.length) {
      section.replaceChildren(
        heading,
        el(
          "p",
          { class: "notice empty", id: "no-evaluations" },
          "No evaluations yet. Start one above; it appears here with its progress.",
        ),
      );
      return;
    }
    section.replaceChildren(
      heading,
      el(
        "ul",
        { class: "jobs" },
        jobs.map((job) =>
          el(
            "li",
            { "data-id": job.id },
            el(
              "a",
              { class: "job", href: `#/evaluations/${job.id}` },
              el("span", { class: "job-status" }, badge(job.status)),
              el(
                "span",
                { class: "job-model" },
                el("strong", {}, job.model),
                el("span", { class: "mono muted" }, ` ${shortId(job.id)}`),
              ),
              el("span", { class: "job-progress" }, progressBar(job, false)),
              el(
                "span",
                { class: "job-figure" },
                job.robust_accuracy_so_far === null
                  ? ""
                  : `robust ${pct(job.robust_accuracy_so_far)}`,
              ),
              el(
                "span",
                { class: "job-time muted", title: when(job.created_at) },
                ago(job.created_at),
              ),
            ),
            job.status === "failed" && job.error
              ? el("p", { class: "job-error" }, job.error)
              : null,
          ),
        ),
      ),
    );
  }

  function progressBar(job, live) {
    const share = job.total ? job.done / job.total : 0;
    const percent = Math.round(share * 100);
    return el(
      "span",
      {
        class: `progress ${job.status}`,
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": percent,
        "aria-label": `${job.done} of ${job.total} samples`,
        "data-live": live || undefined,
      },
      el("span", { class: "fill", style: `width: ${percent}%` }),
    );
  }

  function updateProgress(bar, job) {
    const percent = job.total ? Math.round((job.done / job.total) * 100) : 0;
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-label", `${job.done} of ${job.total} samples`);
    bar.className = `progress ${job.status}`;
    $(".fill", bar).style.width = `${percent}%`;
  }

  // ---- The start form ----------------------------------------------------------------------

  function startForm(models, datasets) {
    const heading = el("h2", {}, "Start an evaluation");
    // A model still loading takes jobs (they wait for it); an unavailable one does not.
    const ready = models.filter((m) => m.state !== "UNAVAILABLE");
    if (!ready.length) {
      return [
        heading,
        el(
          "p",
          { class: "notice empty" },
          models.length
            ? "No model can be evaluated: every one is unavailable (see above)."
            : "An evaluation needs a model; this server has none.",
        ),
      ];
    }
    if (!datasets.length) {
      return [
        heading,
        el(
          "p",
          { class: "notice empty", id: "no-datasets" },
          "No data sets are stored. Upload one with ",
          el("code", {}, "PUT /v2/datasets/{name}"),
          " (a safetensors file with x and y).",
        ),
      ];
    }

    const field = (label, control, hint) =>
      el(
        "label",
        { class: "field" },
        el("span", {}, label),
        control,
        hint ? el("small", {}, hint) : null,
      );
    const model = el(
      "select",
      { name: "model" },
      ready.map((m) => el("option", { value: m.name }, m.name)),
    );
    const dataset = el("select", { name: "dataset" });
    const limit = el("input", { name: "limit", type: "number", min: 1, step: 1, value: 100 });
    const start = el("input", { name: "start", type: "number", min: 0, step: 1, value: 0 });
    const attack = el(
      "select",
      { name: "attack" },
      [
        ["pgd", "PGD"],
        ["apgd", "APGD"],
        ["fgsm", "FGSM"],
        ["noise", "Random noise"],
      ].map(([v, t]) => el("option", { value: v }, t)),
    );
    const norm = el(
      "select",
      { name: "norm" },
      el("option", { value: "linf" }, "Linf"),
      el("option", { value: "l2" }, "L2"),
    );
    const eps = el("input", {
      name: "eps",
      type: "text",
      value: "0.05, 0.1",
      inputmode: "decimal",
      spellcheck: "false",
    });
    const steps = el("input", { name: "steps", type: "number", min: 1, step: 1, value: 10 });
    const thorough = el("input", { name: "thorough", type: "checkbox", checked: true });
    const gate = el("input", {
      name: "min_robust_accuracy",
      type: "number",
      min: 0,
      max: 100,
      step: "any",
      placeholder: "none",
    });
    const chunk = el("input", {
      name: "chunk_size",
      type: "number",
      min: 1,
      step: 1,
      placeholder: "server's batch size",
    });
    const seed = el("input", { name: "seed", type: "number", min: 0, step: 1, value: 0 });
    const message = el("p", { class: "form-message", role: "status" });
    const submit = el("button", { type: "submit" }, "Start");

    // Only the data sets whose samples have the model's input shape.
    const fillDatasets = () => {
      const card = ready.find((m) => m.name === model.value).meta.card;
      const fits = datasets.filter((d) => fitsCard(d, card));
      dataset.replaceChildren(
        ...fits.map((d) => el("option", { value: d.name }, `${d.name} (${d.n})`)),
      );
      submit.disabled = !fits.length;
      message.textContent = fits.length
        ? ""
        : `No stored data set has ${model.value}'s input shape.`;
      message.className = "form-message";
      fitLimit();
    };
    const fitLimit = () => {
      const d = datasets.find((x) => x.name === dataset.value);
      if (d) {
        limit.max = d.n;
        if (Number(limit.value) > d.n) limit.value = d.n;
      }
    };
    model.addEventListener("change", fillDatasets);
    dataset.addEventListener("change", fitLimit);
    attack.addEventListener("change", () => {
      steps.disabled = attack.value === "fgsm" || attack.value === "noise";
    });

    const form = el(
      "form",
      { class: "start", id: "start-form", novalidate: true },
      el(
        "div",
        { class: "fields" },
        field("Model", model),
        field("Data set", dataset),
        field("Samples", limit, "how many, from the first"),
        field("Attack", attack),
        field("Norm", norm),
        field("ε", eps, "one value, or several for a curve"),
        field("Steps", steps),
        field("Gate: min. robust accuracy (%)", gate, "optional"),
      ),
      el(
        "div",
        { class: "options" },
        el(
          "label",
          { class: "check" },
          thorough,
          " Thorough checks (single step, noise, unbounded ε)",
        ),
        el(
          "details",
          {},
          el("summary", {}, "More settings"),
          el(
            "div",
            { class: "fields" },
            field("First sample", start),
            field("Chunk size", chunk),
            field("Seed", seed),
          ),
        ),
      ),
      el("div", { class: "actions" }, submit, message),
    );

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.className = "form-message";
      let body;
      try {
        body = startRequest({
          model,
          dataset,
          limit,
          start,
          attack,
          norm,
          eps,
          steps,
          thorough,
          gate,
          chunk,
          seed,
        });
      } catch (error) {
        message.textContent = error.message;
        message.className = "form-message error";
        return;
      }
      submit.disabled = true;
      message.textContent = "Starting…";
      try {
        const job = await api("/v2/evaluations", { method: "POST", body });
        justStarted = job.id;
        location.hash = `#/evaluations/${job.id}`;
      } catch (error) {
        message.textContent =
          error instanceof Offline ? "The server does not answer." : error.message;
        message.className = "form-message error";
        submit.disabled = false;
      }
    });
    // Start on the first model that has a data set to run on.
    const fitting = ready.find((m) =>
      datasets.some((d) => fitsCard(d, m.meta.card)),
    );
    if (fitting) model.value = fitting.name;
    fillDatasets();
    return [heading, form];
  }

  /** The request body from the form's fields; throws naming the field that is wrong. */
  function startRequest(f) {
    const integer = (input, name, min) => {
      const v = Number(input.value);
      if (!Number.isInteger(v) || v < min)
        throw new Error(`${name}: a whole number of at least ${min}, please`);
      return v;
    };
    const epsValues = f.eps.value
      .split(/[\s,;]+/)
      .filter(Boolean)
      .map(Number);
    if (!epsValues.length || epsValues.some((v) => !Number.isFinite(v) || v < 0)) {
      throw new Error("ε: one or more numbers of at least 0, separated by commas");
    }
    const parameters = {
      attack: f.attack.value,
      norm: f.norm.value,
      eps: epsValues.length === 1 ? epsValues[0] : epsValues,
      thorough: f.thorough.checked,
      seed: integer(f.seed, "Seed", 0),
    };
    if (!f.steps.disabled) parameters.steps = integer(f.steps, "Steps", 1);
    if (f.gate.value.trim() !== "") {
      const share = Number(f.gate.value) / 100;
      if (!(share >= 0 && share <= 1)) throw new Error("Gate: a percentage from 0 to 100");
      parameters.gate = { min_robust_accuracy: share };
    }
    const body = {
      model: f.model.value,
      dataset: f.dataset.value,
      start: integer(f.start, "First sample", 0),
      limit: integer(f.limit, "Samples", 1),
      parameters,
    };
    if (f.chunk.value.trim() !== "") body.chunk_size = integer(f.chunk, "Chunk size", 1);
    return body;
  }

  // ---- One evaluation ----------------------------------------------------------------------

  async function showEvaluation(view, id, current) {
    let job = await api(`/v2/evaluations/${path(id)}`);
    if (!current()) return;
    const status = el("span", { id: "job-status" }, badge(job.status));
    const bar = progressBar(job, true);
    const counts = el("span", { class: "progress-text", id: "progress-text" });
    const sofar = el("span", { class: "muted", id: "so-far" });
    const cancel = el("button", { type: "button", class: "danger", id: "cancel" }, "Cancel");
    const outcome = el("div", { id: "outcome" });
    const showProgress = (j) => {
      status.replaceChildren(badge(j.status));
      updateProgress(bar, j);
      counts.textContent = `${j.done} / ${j.total} samples`;
      const parts = [];
      if (j.clean_accuracy_so_far !== null && j.clean_accuracy_so_far !== undefined)
        parts.push(`clean ${pct(j.clean_accuracy_so_far)}`);
      if (j.robust_accuracy_so_far !== null && j.robust_accuracy_so_far !== undefined)
        parts.push(`robust ${pct(j.robust_accuracy_so_far)}`);
      sofar.textContent = parts.length ? `so far: ${parts.join(", ")}` : "";
      cancel.hidden = TERMINAL.has(j.status);
    };

    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
      try {
        await api(`/v2/evaluations/${path(id)}`, { method: "DELETE" });
      } catch (error) {
        cancel.disabled = false;
        cancel.textContent = "Cancel";
        outcome.replaceChildren(
          el("div", { class: "notice error" }, `Could not cancel: ${error.message}`),
        );
      }
    });

    view.replaceChildren(
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "← Overview")),
      el(
        "section",
        { class: "panel", id: "evaluation", "data-id": id },
        el(
          "header",
          { class: "evaluation-head" },
          el("h2", {}, job.model),
          status,
          el("span", { class: "mono muted" }, id),
        ),
        el("p", { class: "muted" }, `Started ${when(job.created_at)}`),
        el("div", { class: "live" }, bar, el("div", { class: "live-text" }, counts, sofar, cancel)),
      ),
      outcome,
    );
    showProgress(job);

    const follow = !TERMINAL.has(job.status) || justStarted === id;
    justStarted = null;
    if (follow) {
      outcome.replaceChildren(
        el("p", { class: "notice" }, "The report appears here when the evaluation succeeds."),
      );
      // Events replayed from the start of the stream never move the bar back; a job that ended
      // before this view opened is replayed from zero.
      let shown = TERMINAL.has(job.status) ? { ...job, status: "queued", done: 0 } : job;
      showProgress(shown);
      const stop = followEvents(id, (event) => {
        if (event.data.done >= shown.done) {
          shown = { ...shown, ...event.data };
          showProgress(shown);
        }
        if (!TERMINAL.has(event.event)) return false;
        api(`/v2/evaluations/${path(id)}`)
          .then((done) => {
            job = done;
            showProgress(done);
            return renderOutcome(outcome, done);
          })
          .catch((error) => showError(outcome, error));
        return true;
      });
      leaveView = stop;
    } else {
      await renderOutcome(outcome, job);
    }
  }

  async function renderOutcome(outcome, job) {
    if (job.status === "failed") {
      outcome.replaceChildren(
        el(
          "div",
          { class: "notice error", id: "job-failed" },
          el("strong", {}, "This evaluation failed. "),
          job.error || "The server gave no reason.",
        ),
      );
      return;
    }
    if (job.status === "cancelled") {
      outcome.replaceChildren(
        el(
          "div",
          { class: "notice", id: "job-cancelled" },
          `This evaluation was cancelled after ${job.done} of ${job.total} samples; it has no report.`,
        ),
      );
      return;
    }
    if (!job.report) {
      outcome.replaceChildren(el("div", { class: "notice" }, "This evaluation has no report."));
      return;
    }
    const report = job.report;
    const meta = await api(`/v2/models/${path(job.model)}`).catch(() => null);
    const card = meta && meta.sha256 === job.model_sha256 ? meta.card : null;
    const gallery = el("section", { class: "panel", id: "gallery" });
    outcome.replaceChildren(
      headline(report),
      el(
        "div",
        { class: "two" },
        el(
          "section",
          { class: "panel", id: "curve" },
          el("h3", {}, "Robustness curve"),
          curve(report),
        ),
        el("section", { class: "panel", id: "gate" }, gateView(report.gate)),
      ),
      el(
        "section",
        { class: "panel", id: "breakdown" },
        el("h3", {}, "Per attack"),
        breakdown(report),
      ),
      el(
        "section",
        { class: "panel", id: "checks" },
        el("h3", {}, "Sanity checks"),
        checksView(report.checks),
      ),
      gallery,
      downloads(job),
    );
    await fillGallery(gallery, job, card);
  }

  function headline(report) {
    const s = report.summary;
    const figure = (label, value, sub, cls) =>
      el(
        "div",
        { class: `figure ${cls || ""}` },
        el("span", { class: "label" }, label),
        el("span", { class: "value" }, value),
        sub ? el("span", { class: "sub" }, sub) : null,
      );
    const figures = [];
    if (s.robust_accuracy) {
      figures.push(
        figure("Robust accuracy", pct(s.robust_accuracy.value), ci(s.robust_accuracy), "main"),
      );
      figures.push(figure("Clean accuracy", pct(s.clean_accuracy.value), ci(s.clean_accuracy)));
      figures.push(
        figure(
          "Accuracy drop",
          `${((s.clean_accuracy.value - s.robust_accuracy.value) * 100).toFixed(1)} pts`,
          `${s.clean_accuracy.count - s.robust_accuracy.count} of ${s.n} samples`,
        ),
      );
    }
    figures.push(
      figure(
        "Mean robust loss",
        num(s.mean_robust_loss),
        `clean ${num(s.mean_clean_loss)}, max ${num(s.max_robust_loss)}`,
      ),
    );
    figures.push(
      figure("Samples", String(s.n), `${(report.timings.total_ms / 1000).toFixed(1)} s`),
    );
    return el(
      "section",
      { class: "panel", id: "headline" },
      el("h3", {}, "Report"),
      el(
        "p",
        { class: "plan" },
        describePlan(report.plan),
        report.sweep.length
          ? ` · ε sweep ${report.sweep.map((r) => num(r.eps)).join(", ")} (figures at the largest)`
          : "",
        ` · objective ${report.plan.objective} · seed ${report.plan.seed}`,
      ),
      el("div", { class: "figures" }, figures),
      el(
        "p",
        { class: "muted small" },
        `robustd ${report.robustd_version}, libtorch ${report.libtorch_version}, report schema ${report.schema}`,
      ),
    );
  }

  /** Whether a data set's samples have the shape a model card asks for. */
  function fitsCard(dataset, card) {
    return dataset.x_shape.slice(1).join() === card.input.shape.join();
  }

  /** A sample row's outcome: broken by the attack, held, or wrong before it. */
  function outcome(s) {
    return s.clean_correct && !s.robust ? "broken" : s.robust ? "held" : "wrong";
  }

  /** A report's rows per eps: its sweep, or its one eps with the summary. */
  function sweepRows(report) {
    return report.sweep.length
      ? report.sweep
      : [{ eps: report.plan.attacks[0].eps, summary: report.summary }];
  }

  /** Robust accuracy against eps with its 95% band, clean accuracy at eps 0; inline SVG. */
  function curve(report) {
    const rows = sweepRows(report);
    const accuracy = Boolean(report.summary.robust_accuracy);
    const points = rows.map((r) => {
      const p = accuracy ? r.summary.robust_accuracy : null;
      return accuracy
        ? { eps: r.eps, value: p.value, lo: p.ci95[0], hi: p.ci95[1] }
        : {
            eps: r.eps,
            value: r.summary.mean_robust_loss,
            lo: r.summary.mean_robust_loss,
            hi: r.summary.mean_robust_loss,
          };
    });
    if (accuracy && points[0].eps > 0) {
      const c = rows[0].summary.clean_accuracy;
      points.unshift({ eps: 0, value: c.value, lo: c.ci95[0], hi: c.ci95[1], clean: true });
    } else if (!accuracy && points[0].eps > 0) {
      const loss = rows[0].summary.mean_clean_loss;
      points.unshift({ eps: 0, value: loss, lo: loss, hi: loss, clean: true });
    }

    // A phone gets a squarer chart, so that its text stays readable when scaled down.
    const narrow = window.matchMedia("(max-width: 760px)").matches;
    const [W, H] = narrow ? [400, 300] : [640, 300];
    const m = { l: narrow ? 48 : 64, r: 28, t: 30, b: 52 };
    const xmax = Math.max(...points.map((p) => p.eps)) || 1;
    const ymax = accuracy ? 1 : niceCeiling(Math.max(...points.map((p) => p.hi)) || 1);
    const x = (e) => m.l + (e / xmax) * (W - m.l - m.r);
    const y = (v) => m.t + (1 - v / ymax) * (H - m.t - m.b);
    const format = (v) => (accuracy ? `${Math.round(v * 100)}%` : num(v, 2));
    const norm = report.plan.attacks[0].norm;

    const grid = [0, 0.25, 0.5, 0.75, 1].map((t) => t * ymax);
    const band = points
      .map((p) => `${x(p.eps)},${y(p.hi)}`)
      .concat(
        points
          .slice()
          .reverse()
          .map((p) => `${x(p.eps)},${y(p.lo)}`),
      );
    const threshold =
      report.gate && report.gate.rules.find((r) => r.rule === "min_robust_accuracy");

    return svg(
      "svg",
      {
        viewBox: `0 0 ${W} ${H}`,
        class: "chart",
        role: "img",
        "aria-label": `${accuracy ? "Robust accuracy" : "Mean robust loss"} against ε`,
      },
      grid.map((v) => [
        svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: "grid" }),
        svg("text", { x: m.l - 8, y: y(v) + 4, class: "tick", "text-anchor": "end" }, format(v)),
      ]),
      points.map((p) =>
        svg(
          "text",
          { x: x(p.eps), y: H - m.b + 18, class: "tick", "text-anchor": "middle" },
          num(p.eps),
        ),
      ),
      svg(
        "text",
        { x: (m.l + W - m.r) / 2, y: H - 8, class: "axis", "text-anchor": "middle" },
        `ε (${norm})`,
      ),
      svg(
        "text",
        {
          x: 14,
          y: (m.t + H - m.b) / 2,
          class: "axis y-title",
          "text-anchor": "middle",
          transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`,
        },
        accuracy ? "robust accuracy" : "mean robust loss",
      ),
      svg("polygon", { points: band.join(" "), class: "band" }),
      threshold && threshold.threshold !== null
        ? [
            svg("line", {
              x1: m.l,
              x2: W - m.r,
              y1: y(threshold.threshold),
              y2: y(threshold.threshold),
              class: "threshold",
            }),
            svg(
              "text",
              {
                x: W - m.r,
                y: y(threshold.threshold) - 6,
                class: "tick threshold-label",
                "text-anchor": "end",
              },
              `gate ${format(threshold.threshold)}`,
            ),
          ]
        : null,
      svg("polyline", {
        points: points.map((p) => `${x(p.eps)},${y(p.value)}`).join(" "),
        class: "line",
      }),
      points.map((p) =>
        svg(
          "g",
          { class: p.clean ? "point clean" : "point", "data-eps": p.eps, "data-value": p.value },
          svg("circle", { cx: x(p.eps), cy: y(p.value), r: 5 }),
          svg(
            "text",
            {
              x: x(p.eps),
              y: y(p.value) - 11,
              class: "value",
              "text-anchor": p.eps === xmax ? "end" : p.eps === 0 ? "start" : "middle",
            },
            accuracy ? pct(p.value) : num(p.value),
          ),
          svg(
            "title",
            {},
            `ε ${num(p.eps)}${p.clean ? " (clean)" : ""}: ${accuracy ? pct(p.value) : num(p.value)}${accuracy ? `, 95% CI ${pct(p.lo)} – ${pct(p.hi)}` : ""}`,
          ),
        ),
      ),
    );
  }

  function niceCeiling(v) {
    const step = 10 ** Math.floor(Math.log10(v));
    return Math.ceil(v / step) * step;
  }

  /** Per eps: how many points stayed robust, fell to each attack, or were wrong to begin with. */
  function breakdown(report) {
    const rows = sweepRows(report);
    const s0 = rows[0].summary;
    if (!s0.robust_accuracy) {
      return el(
        "p",
        { class: "muted" },
        "A regression model has no accuracy to break down; see the robust loss above.",
      );
    }
    const attacks = s0.by_attack.map((a) => a.attack);
    const colours = ["seg-a0", "seg-a1", "seg-a2", "seg-a3", "seg-a4", "seg-a5"];
    const segments = (s) => [
      { key: "robust", label: "robust", count: s.robust_accuracy.count, cls: "seg-robust" },
      ...s.by_attack.map((a, i) => ({
        key: a.attack,
        label: `broken by ${a.attack}`,
        count: a.broke,
        cls: colours[i % colours.length],
      })),
      {
        key: "clean",
        label: "wrong on the clean input",
        count: s.n - s.clean_accuracy.count,
        cls: "seg-wrong",
      },
    ];
    const legend = el(
      "ul",
      { class: "legend" },
      segments(s0).map((g) => el("li", {}, el("span", { class: `swatch ${g.cls}` }), g.label)),
    );
    const table = el(
      "table",
      { class: "breakdown" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", {}, "ε"),
          el("th", {}, "robust"),
          attacks.map((a) => el("th", {}, a)),
          el("th", {}, "wrong clean"),
          el("th", { class: "bar-cell" }, ""),
        ),
      ),
      el(
        "tbody",
        {},
        rows.map((r) => {
          const segs = segments(r.summary);
          return el(
            "tr",
            {},
            el("td", {}, num(r.eps)),
            segs.map((g) =>
              el(
                "td",
                { class: "count" },
                `${g.count}`,
                el("small", {}, ` ${pct(g.count / r.summary.n, 0)}`),
              ),
            ),
            el(
              "td",
              { class: "bar-cell" },
              el(
                "span",
                { class: "stack" },
                segs.map((g) =>
                  g.count
                    ? el("span", {
                        class: g.cls,
                        style: `flex-grow: ${g.count}`,
                        title: `${g.label}: ${g.count}`,
                      })
                    : null,
                ),
              ),
            ),
          );
        }),
      ),
    );
    return [el("div", { class: "scroll" }, table), legend];
  }

  function checksView(checks) {
    return el(
      "ul",
      { class: "checks" },
      checks.map((c) =>
        el(
          "li",
          { class: `check ${c.status}`, "data-check": c.name, "data-status": c.status },
          badge(c.status),
          el(
            "div",
            {},
            el("strong", { class: "mono" }, c.name),
            el("p", {}, c.message),
            figuresLine(c.figures),
          ),
        ),
      ),
    );
  }

  function figuresLine(figures) {
    const entries = Object.entries(figures || {});
    if (!entries.length) return null;
    return el(
      "p",
      { class: "mono small muted" },
      entries.map(([k, v]) => `${k} ${num(v, 4)}`).join(" · "),
    );
  }

  function gateView(gate) {
    if (!gate) {
      return [
        el("h3", {}, "Gate"),
        el(
          "p",
          { class: "muted", id: "gate-verdict" },
          "No gate was set for this evaluation: give thresholds when starting one.",
        ),
      ];
    }
    return [
      el("h3", {}, "Gate"),
      el(
        "p",
        {
          class: `verdict ${gate.passed ? "pass" : "fail"}`,
          id: "gate-verdict",
          "data-passed": gate.passed,
        },
        gate.passed ? "Gate passed" : "Gate failed",
      ),
      el(
        "ul",
        { class: "rules" },
        gate.rules.map((r) =>
          el(
            "li",
            {},
            badge(r.passed ? "pass" : "fail"),
            el(
              "span",
              {},
              r.message,
              r.threshold !== null && r.actual !== null
                ? el(
                    "small",
                    { class: "muted" },
                    ` (threshold ${num(r.threshold)}, actual ${num(r.actual)})`,
                  )
                : null,
            ),
          ),
        ),
      ),
    ];
  }

  function downloads(job) {
    const link = (label, url, filename) =>
      el(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: async (event) => {
            const button = event.currentTarget;
            button.disabled = true;
            try {
              const blob = await (await api(url, { raw: true })).blob();
              const a = el("a", { href: URL.createObjectURL(blob), download: filename });
              document.body.append(a);
              a.click();
              a.remove();
              setTimeout(() => URL.revokeObjectURL(a.href), 10000);
            } catch (error) {
              button.title = error.message;
            } finally {
              button.disabled = false;
            }
          },
        },
        label,
      );
    return el(
      "section",
      { class: "panel downloads" },
      el("h3", {}, "Downloads"),
      link("Adversarial examples (.npy)", job.links.adversarial_npy, `${job.id}-adversarial.npy`),
      link(
        "Adversarial examples (.safetensors)",
        job.links.adversarial_safetensors,
        `${job.id}-adversarial.safetensors`,
      ),
      link(
        "Clean inputs (.safetensors)",
        `/v2/evaluations/${path(job.id)}/inputs.safetensors`,
        `${job.id}-inputs.safetensors`,
      ),
      link("Report (.json)", job.links.self, `${job.id}.json`),
    );
  }

  // ---- The gallery -------------------------------------------------------------------------

  /** [channels, height, width] when the model's inputs are images, else null. */
  function imageShape(card) {
    if (!card) return null;
    const shape = card.input.shape;
    if (shape.length === 3 && [1, 3].includes(shape[0]) && shape[1] >= 4 && shape[2] >= 4)
      return shape;
    if (shape.length === 2 && shape[0] >= 4 && shape[1] >= 4) return [1, shape[0], shape[1]];
    return null;
  }

  async function fillGallery(section, job, card) {
    const shape = imageShape(card);
    if (!shape) {
      section.remove();
      return;
    }
    section.replaceChildren(
      el("h3", {}, "Adversarial examples"),
      el("p", { class: "muted" }, "Loading the examples…"),
    );
    // NOTE: both downloads hold every sample of the evaluation although the gallery shows 12;
    // fine for data sets of thousands of small images, slow for large ones.
    let inputs, adversarial;
    try {
      const [a, b] = await Promise.all([
        api(`/v2/evaluations/${path(job.id)}/inputs.safetensors`, { raw: true }).then((r) =>
          r.arrayBuffer(),
        ),
        api(job.links.adversarial_safetensors, { raw: true }).then((r) => r.arrayBuffer()),
      ]);
      inputs = readSafetensors(a);
      adversarial = readSafetensors(b).adversarial;
    } catch (error) {
      const text =
        error instanceof HttpError && error.status === 410
          ? `The examples are gone: ${error.message}`
          : `The examples could not be loaded: ${error.message}`;
      section.replaceChildren(
        el("h3", {}, "Adversarial examples"),
        el("p", { class: "notice" }, text),
      );
      return;
    }

    const samples = job.report.samples;
    const size = shape[0] * shape[1] * shape[2];
    const [lo, hi] = card.input.domain;
    const names = card.class_names || [];
    const label = (c) =>
      c === null || c === undefined ? "–" : names[c] !== undefined ? names[c] : String(c);

    // Broken points first (what the attack found), then robust ones, then those wrong from the start.
    const rank = (s) => ["broken", "held", "wrong"].indexOf(outcome(s));
    const order = samples
      .map((s, i) => i)
      .sort((a, b) => rank(samples[a]) - rank(samples[b]) || a - b)
      .slice(0, 12);

    // One amplification for the whole gallery: the largest perturbation spans the grey range.
    let largest = 0;
    for (const i of order) {
      for (let k = i * size; k < (i + 1) * size; k++) {
        largest = Math.max(largest, Math.abs(adversarial.values[k] - inputs.x.values[k]));
      }
    }
    const amplification = largest > 0 ? (hi - lo) / (2 * largest) : 1;
    const broken = samples.filter((s) => outcome(s) === "broken").length;

    const tiles = order.map((i) => {
      const s = samples[i];
      const clean = inputs.x.values.slice(i * size, (i + 1) * size);
      const adv = adversarial.values.slice(i * size, (i + 1) * size);
      const delta = adv.map((v, k) => v - clean[k]);
      const truth = inputs.y.shape.length === 1 ? inputs.y.values[i] : null;
      const fooled = s.adversarial_prediction !== truth;
      return el(
        "figure",
        {
          class: `tile ${outcome(s)}`,
          "data-index": i,
        },
        el(
          "div",
          { class: "images" },
          picture(clean, shape, (v) => (v - lo) / (hi - lo), "clean", "clean input"),
          picture(adv, shape, (v) => (v - lo) / (hi - lo), "adversarial", "adversarial example"),
          picture(
            delta,
            shape,
            (v) => 0.5 + (v * amplification) / (hi - lo),
            "perturbation",
            `perturbation ×${num(amplification, 2)}`,
          ),
        ),
        el(
          "figcaption",
          {},
          el("span", { class: "true-label" }, "true ", el("b", {}, label(truth))),
          el("span", { class: "clean-label" }, "clean ", el("b", {}, label(s.clean_prediction))),
          el(
            "span",
            { class: `adversarial-label ${fooled ? "fooled" : ""}` },
            "adv. ",
            el("b", {}, label(s.adversarial_prediction)),
          ),
        ),
      );
    });
    section.replaceChildren(
      el("h3", {}, "Adversarial examples"),
      el(
        "p",
        { class: "muted" },
        `Clean input, adversarial example and the perturbation amplified ×${num(amplification, 2)} (grey is zero). `,
        `The attack broke ${broken} of ${samples.length} samples; broken ones come first.`,
      ),
      el("div", { class: "gallery" }, tiles),
    );
  }

  /** A canvas showing one CHW sample; `toUnit` maps a value to [0, 1]. */
  function picture(values, [c, h, w], toUnit, cls, caption) {
    const canvas = el("canvas", {
      width: w,
      height: h,
      class: cls,
      title: caption,
      "aria-label": caption,
    });
    const context = canvas.getContext("2d");
    const image = context.createImageData(w, h);
    const byte = (v) => Math.max(0, Math.min(255, Math.round(toUnit(v) * 255)));
    for (let p = 0; p < h * w; p++) {
      const r = byte(values[p]);
      const g = c === 3 ? byte(values[h * w + p]) : r;
      const b = c === 3 ? byte(values[2 * h * w + p]) : r;
      image.data.set([r, g, b, 255], p * 4);
    }
    context.putImageData(image, 0, 0);
    return el("span", { class: "picture" }, canvas, el("small", {}, caption));
  }

  // ---- Start -------------------------------------------------------------------------------

  async function showServer() {
    try {
      const meta = await api("/v2");
      $("#server").textContent = `${meta.name || "robustd"} ${meta.version || ""}`.trim();
    } catch {
      // The view shows the error.
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpTokenForm();
    window.addEventListener("hashchange", route);
    showServer();
    route();
  });
})();
