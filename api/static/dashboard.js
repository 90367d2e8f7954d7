// The campaign dashboard: the HTTP API for lists and commands, the Socket.IO stream for live
// progress (docs/http-api.md, docs/socketio-events.md). No framework: one state map, one render
// per campaign.
"use strict";

(function () {
  const TOKEN_KEY = "campaignEngineToken";
  const API = "/api/v1";
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  // Which buttons each status offers, in order.
  const ACTIONS = {
    draft: ["start", "cancel"],
    scheduled: ["start", "pause", "cancel"],
    running: ["pause", "cancel"],
    paused: ["resume", "cancel"],
  };
  const LABELS = { start: "Start", pause: "Pause", resume: "Resume", cancel: "Cancel" };

  const campaigns = new Map(); // id -> campaign object (snake_case, as the API returns it)
  // Status events seen per campaign: a command's HTTP answer must not overwrite a newer event.
  const statusEvents = new Map();
  let socket = null;

  const $ = (id) => document.getElementById(id);

  function token() {
    return window.localStorage.getItem(TOKEN_KEY);
  }

  function notice(text, isError) {
    const box = $("notice");
    box.textContent = text;
    box.classList.toggle("error", Boolean(isError));
    box.hidden = !text;
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch (_) {
      payload = null;
    }
    if (response.status === 401) {
      forgetToken((payload && payload.message) || "The token was refused.");
      throw new Error("unauthorized");
    }
    if (!response.ok || !payload || !payload.success) {
      const message = (payload && payload.message) || "HTTP " + response.status;
      throw new Error(message);
    }
    return payload;
  }

  // --- rendering -----------------------------------------------------------------------------

  function percent(value) {
    return (Math.round((Number(value) || 0) * 100) / 100).toFixed(2) + "%";
  }

  function campaignElement(id) {
    let el = document.querySelector('.campaign[data-id="' + CSS.escape(id) + '"]');
    if (el) return el;
    el = document.createElement("article");
    el.className = "campaign";
    el.dataset.id = id;
    el.innerHTML =
      '<div class="head"><h3 class="name"></h3><span class="status"></span>' +
      '<span class="rate muted"></span><span class="actions"></span></div>' +
      '<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100">' +
      '<div class="fill"></div><span class="bar-label"></span></div>' +
      '<dl class="counts"></dl><p class="error-text" hidden></p>' +
      '<p class="wait-text muted" hidden></p>' +
      '<p class="ab-phase muted" hidden></p><table class="variants" hidden></table>' +
      '<dl class="pricing" hidden></dl>' +
      '<button type="button" class="link show-cost">Cost by pricing category</button>';
    el.querySelector(".actions").addEventListener("click", onAction);
    attachTools(el, id);
    el.querySelector(".show-cost").addEventListener("click", () => {
      pricingShown.add(id);
      refresh(id);
    });
    $("campaigns").appendChild(el);
    return el;
  }

  function render(c) {
    const el = campaignElement(c.id);
    const stats = c.stats || {};
    const metrics = c.metrics || {};
    const progress = Math.max(0, Math.min(100, Number(c.progress) || 0));
    el.dataset.status = c.status;
    el.querySelector(".name").textContent = c.name;
    const status = el.querySelector(".status");
    status.textContent = c.status;
    status.className = "status status-" + c.status;
    const perMinute = c.throttle_config && c.throttle_config.messagesPerMinute;
    el.querySelector(".rate").textContent = perMinute ? perMinute + " msg/min" : "";
    const bar = el.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(progress));
    el.querySelector(".fill").style.width = progress + "%";
    el.querySelector(".bar-label").textContent =
      percent(progress) + " · " + (c.total_recipients || 0) + " recipients";
    const rows = [
      ["sent", stats.sent, null],
      ["delivered", stats.delivered, metrics.delivery_rate],
      ["read", stats.read, metrics.read_rate],
      ["replied", stats.replied, metrics.reply_rate],
      ["failed", stats.failed, metrics.failure_rate],
    ];
    if (c.track_links) rows.push(["clicked", stats.clicked || 0, metrics.click_rate]);
    el.querySelector(".counts").innerHTML = rows
      .map(
        ([label, count, rate]) =>
          '<div class="count count-' + label + '"><dt>' + label + "</dt><dd>" +
          (count || 0) + (rate === null ? "" : ' <small>' + percent(rate) + "</small>") +
          "</dd></div>"
      )
      .join("");
    const error = el.querySelector(".error-text");
    error.textContent = c.error || "";
    error.hidden = !c.error;
    renderWaiting(el, c);
    renderPricing(el, c.pricing);
    renderVariants(el, c);
    const actions = el.querySelector(".actions");
    const wanted = ACTIONS[c.status] || [];
    if (actions.dataset.for !== wanted.join()) {
      actions.dataset.for = wanted.join();
      actions.innerHTML = wanted
        .map(
          (a) =>
            '<button type="button" class="action action-' + a + '" data-action="' + a + '">' +
            LABELS[a] + "</button>"
        )
        .join("");
    }
    $("empty").hidden = campaigns.size > 0;
  }

  // What a running campaign waits for (docs/http-api.md, "The campaign object").
  function renderWaiting(el, c) {
    const lines = [];
    if (c.status === "running" && c.deferred_count) {
      lines.push(
        c.deferred_count + " recipients wait for the messaging limit until " +
        c.deferred_until + ": " + c.deferred_reason
      );
    }
    if (c.status === "running" && c.waiting_for_window) {
      lines.push("Waiting for the send window: it opens at " + c.next_window_opens_at);
    }
    const w = c.send_window;
    if (w) lines.push("Send window " + w.start + " to " + w.end + " " + (w.timezone || "UTC"));
    const wait = el.querySelector(".wait-text");
    wait.textContent = lines.join(" · ");
    wait.hidden = lines.length === 0;
  }

  // The create body's `sendWindow`, when both ends are set.
  function windowFields() {
    const start = $("window-start").value;
    const end = $("window-end").value;
    if (!start || !end) return {};
    const timezone = $("window-timezone").value.trim();
    return { sendWindow: { start, end, timezone: timezone || null } };
  }

  function update(id, change) {
    const current = campaigns.get(id);
    if (!current) return false;
    const next = Object.assign({}, current, change);
    campaigns.set(id, next);
    render(next);
    return true;
  }

  async function reload() {
    const list = [];
    let cursor = null;
    do {
      const query = "?limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const page = await api("GET", "/campaigns" + query);
      list.push(...page.data);
      cursor = page.pagination ? page.pagination.next_cursor : null;
    } while (cursor);
    const seen = new Set(list.map((c) => c.id));
    for (const id of campaigns.keys()) {
      if (!seen.has(id)) {
        campaigns.delete(id);
        const el = document.querySelector('.campaign[data-id="' + CSS.escape(id) + '"]');
        if (el) el.remove();
      }
    }
    // Newest first, as the API lists them.
    for (const c of list) campaigns.set(c.id, c);
    const container = $("campaigns");
    for (const c of list) {
      render(c);
      container.appendChild(campaignElement(c.id));
    }
    $("empty").hidden = list.length > 0;
  }

  async function refresh(id) {
    try {
      const payload = await api("GET", "/campaigns/" + encodeURIComponent(id));
      campaigns.set(id, payload.data);
      render(payload.data);
    } catch (error) {
      if (error.message !== "unauthorized") notice(error.message, true);
    }
  }

  async function loadAccounts() {
    const payload = await api("GET", "/accounts?limit=500");
    const select = $("account");
    select.innerHTML = "";
    for (const account of payload.data) {
      const option = document.createElement("option");
      option.value = account.id;
      option.textContent = account.name + " (" + account.phone_number_id + ")";
      select.appendChild(option);
    }
    if (!payload.data.length) {
      const option = document.createElement("option");
      option.value = "";
      option.textContent = "No accounts: create one with POST /api/v1/accounts";
      select.appendChild(option);
    }
    fillEventAccounts(payload.data);
  }

  // --- A/B variants (docs/http-api.md, "A/B variants") ---------------------------------------

  // Per-variant counts are in a campaign's detail only (GET /campaigns/:id): a campaign with
  // variants fetches it when shown without them, and again (at most once a second) as its
  // counts move.
  const variantsDue = new Set();

  function variantsChanged(id) {
    const c = campaigns.get(id);
    if (!c || !(c.variants || []).length || variantsDue.has(id)) return;
    variantsDue.add(id);
    window.setTimeout(() => {
      variantsDue.delete(id);
      refresh(id);
    }, 1000);
  }

  // --- tracked links (docs/http-api.md, "Tracked links") -------------------------------------

  // A first click emits `campaign:stats` with the campaign's counts (docs/socketio-events.md),
  // but the per-variant click counts only come with the detail: the newest campaigns that
  // track links and have sent are read again now and then.
  const CLICK_CAMPAIGNS = 10;

  function refreshClicks() {
    Array.from(campaigns.values())
      .filter((c) => c.track_links && (c.stats || {}).sent > 0)
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))
      .slice(0, CLICK_CAMPAIGNS)
      .forEach((c) => refresh(c.id));
  }

  const PHASES = {
    not_started: "A/B test: not started",
    sampling: "A/B test: sending the sample",
    waiting: "A/B test: waiting for the sample's results",
    decided: "A/B test: decided",
  };

  function renderVariants(el, c) {
    const variants = c.variants || [];
    const table = el.querySelector(".variants");
    const phase = el.querySelector(".ab-phase");
    table.hidden = variants.length === 0;
    const test = c.ab_test;
    phase.hidden = !test;
    if (test) {
      let text = PHASES[test.phase] || test.phase;
      if (test.phase === "waiting" && test.decide_at) {
        text += ", winner by " + test.metric.replace("_", " ") + " at " +
          new Date(test.decide_at).toLocaleString();
      }
      if (test.winner) text += ": “" + test.winner + "” won by " + test.metric.replace("_", " ");
      phase.textContent = text;
      phase.dataset.phase = test.phase;
    }
    if (!variants.length) return;
    if (variants.some((v) => v.stats === null)) variantsChanged(c.id);
    const head = "<tr><th>Variant</th><th>Weight</th><th>Recipients</th><th>Sent</th>" +
      "<th>Delivered</th><th>Read</th><th>Replied</th><th>Clicked</th><th>Failed</th></tr>";
    table.innerHTML = head + variants.map((v, i) => variantRow(v, i, test)).join("");
  }

  function variantRow(v, index, test) {
    const s = v.stats || {};
    const m = v.metrics || {};
    const cell = (count, rate) =>
      "<td>" + (v.stats ? (count || 0) + (rate === undefined ? "" : " <small>" +
        percent(rate) + "</small>") : "…") + "</td>";
    const winner = test && test.winner === v.name ? " winner" : "";
    return '<tr class="variant' + winner + '" data-variant="' + index + '">' +
      '<td class="variant-name">' + escapeHtml(v.name) + "</td><td>" + escapeHtml(v.weight) +
      "</td>" +
      cell(v.recipients) + cell(s.sent) + cell(s.delivered, m.delivery_rate) +
      cell(s.read, m.read_rate) + cell(s.replied, m.reply_rate) + cell(s.clicked, m.click_rate) +
      cell(s.failed, m.failure_rate) + "</tr>";
  }

  function addVariantRow() {
    const rows = $("variant-rows");
    const n = rows.children.length;
    if (n >= 5) return;
    const row = document.createElement("div");
    row.className = "variant-row";
    row.innerHTML =
      '<input class="variant-name" maxlength="100" required aria-label="Variant name">' +
      '<textarea class="variant-text" rows="2" required aria-label="Variant message"></textarea>' +
      '<input class="variant-weight" type="number" min="0.01" step="any" value="1" required ' +
      'aria-label="Variant weight">' +
      '<button type="button" class="link remove-variant">Remove</button>';
    row.querySelector(".variant-name").value = String.fromCharCode(65 + n); // A, B, ...
    row.querySelector(".remove-variant").addEventListener("click", () => row.remove());
    rows.appendChild(row);
  }

  // The create body's `variants` and `abTest`, when the form has variant rows.
  function abFields() {
    const rows = Array.from(document.querySelectorAll("#variant-rows .variant-row"));
    if (!rows.length) return {};
    const fields = {
      variants: rows.map((row) => ({
        name: row.querySelector(".variant-name").value.trim(),
        messageContent: row.querySelector(".variant-text").value,
        weight: Number(row.querySelector(".variant-weight").value),
      })),
    };
    const share = $("ab-sample").value;
    if (share) {
      fields.abTest = {
        sampleShare: Number(share),
        metric: $("ab-metric").value,
        decideAfterMinutes: Number($("ab-minutes").value),
      };
    }
    return fields;
  }

  // --- cost and the account event log (docs/webhooks.md, "Signals") -------------------------

  // `pricing` is only in a campaign's detail (GET /campaigns/:id): shown once it was fetched.
  function renderPricing(el, pricing) {
    const box = el.querySelector(".pricing");
    if (!pricing) return;
    const categories = Object.keys(pricing).sort();
    box.hidden = false;
    box.innerHTML = categories.length
      ? categories
          .map(
            (name) =>
              '<div class="pricing-' + escapeHtml(name) + '"><dt>' + escapeHtml(name) +
              "</dt><dd>" + pricing[name].messages + " messages, " + pricing[name].billable +
              " billable</dd></div>"
          )
          .join("")
      : '<div><dt>cost</dt><dd>no priced message yet</dd></div>';
  }

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = String(text);
    return div.innerHTML;
  }

  let eventsCursor = null;
  // Campaigns whose cost is shown: kept current as status webhooks change their counts, at
  // most one detail request per campaign a second.
  const pricingShown = new Set();
  const pricingDue = new Set();

  function pricingChanged(id) {
    if (!pricingShown.has(id) || pricingDue.has(id)) return;
    pricingDue.add(id);
    window.setTimeout(() => {
      pricingDue.delete(id);
      refresh(id);
    }, 1000);
  }

  function fillEventAccounts(accounts) {
    const select = $("events-account");
    const chosen = select.value;
    select.innerHTML = "";
    for (const account of accounts) {
      const option = document.createElement("option");
      option.value = account.id;
      option.textContent = account.name + (account.business_account_id
        ? " (WABA " + account.business_account_id + ")"
        : " (" + account.phone_number_id + ")");
      select.appendChild(option);
    }
    if (chosen) select.value = chosen;
    loadEvents(false).catch((e) => notice(e.message, true));
  }

  function eventDetails(e) {
    const v = e.content || {};
    if (e.kind === "message_template_status_update") {
      const language = v.message_template_language ? " (" + v.message_template_language + ")" : "";
      const reason = v.reason && v.reason !== "NONE" ? ": " + v.reason : "";
      return "template " + (v.message_template_name || "?") + language + reason;
    }
    if (e.kind === "phone_number_quality_update") {
      const limit = v.current_limit || v.max_daily_conversations_per_business;
      return (v.display_phone_number || "") + (limit ? " limit " + limit : "") +
        (v.old_limit ? " (was " + v.old_limit + ")" : "");
    }
    const parts = [];
    for (const r of v.restriction_info || []) parts.push(r.restriction_type);
    if (v.ban_info && v.ban_info.waba_ban_state) parts.push("ban " + v.ban_info.waba_ban_state);
    if (v.violation_info && v.violation_info.violation_type) {
      parts.push("violation " + v.violation_info.violation_type);
    }
    return parts.join(", ");
  }

  function campaignNames(ids) {
    return ids.map((id) => (campaigns.get(id) || {}).name || id).join(", ");
  }

  function eventRow(e) {
    const row = document.createElement("tr");
    row.className = "event";
    row.dataset.id = String(e.id);
    row.dataset.event = e.event || "";
    const cells = [
      new Date(e.received_at).toLocaleString(),
      e.kind,
      e.event || "",
      eventDetails(e),
    ];
    row.innerHTML = cells
      .map((text, i) => "<td" + (i === 1 ? ' class="event-kind"' : "") + ">" +
        escapeHtml(text) + "</td>")
      .join("");
    const affected = document.createElement("td");
    if (e.paused_campaigns.length) {
      affected.insertAdjacentHTML("beforeend", '<span class="event-paused">paused ' +
        escapeHtml(campaignNames(e.paused_campaigns)) + "</span> ");
    }
    if (e.resumed_campaigns.length) {
      affected.insertAdjacentHTML("beforeend", '<span class="event-resumed">resumed ' +
        escapeHtml(campaignNames(e.resumed_campaigns)) + "</span>");
    }
    row.appendChild(affected);
    return row;
  }

  // `more`: the next (older) page after the rows shown; otherwise from the newest.
  async function loadEvents(more) {
    const account = $("events-account").value;
    const body = $("events").querySelector("tbody");
    if (!account) {
      body.innerHTML = "";
      $("events").hidden = true;
      $("events-empty").hidden = true;
      $("events-more").hidden = true;
      return;
    }
    let query = "?limit=20";
    if (more && eventsCursor) query += "&cursor=" + encodeURIComponent(eventsCursor);
    const page = await api("GET", "/accounts/" + encodeURIComponent(account) + "/events" + query);
    if ($("events-account").value !== account) return; // another account was chosen meanwhile
    if (!more) body.innerHTML = "";
    for (const e of page.data) body.appendChild(eventRow(e));
    eventsCursor = page.pagination ? page.pagination.next_cursor : null;
    const shown = body.children.length;
    $("events").hidden = shown === 0;
    $("events-empty").hidden = shown > 0;
    $("events-more").hidden = !eventsCursor;
  }

  // Events newer than the newest shown go on top, the older pages loaded stay; when more
  // came than a page holds, the log starts over from the newest.
  async function loadNewer() {
    const account = $("events-account").value;
    const body = $("events").querySelector("tbody");
    const top = body.firstElementChild ? Number(body.firstElementChild.dataset.id) : 0;
    if (!account || !top) return loadEvents(false);
    const page = await api("GET", "/accounts/" + encodeURIComponent(account) + "/events?limit=20");
    if ($("events-account").value !== account) return;
    const fresh = page.data.filter((e) => e.id > top);
    if (fresh.length === page.data.length && page.pagination && page.pagination.next_cursor) {
      return loadEvents(false);
    }
    for (const e of fresh.reverse()) body.prepend(eventRow(e));
  }

  // A signal that paused or resumed a campaign is in the log by then: show it.
  function eventsChanged() {
    loadNewer().catch((e) => notice(e.message, true));
  }

  // --- preview, test send, retarget (docs/http-api.md, "Preview and test send", "Retarget") ---

  const RETARGET = [
    ["not_delivered", "Not delivered"],
    ["not_read", "Not read"],
    ["not_replied", "Not replied"],
    ["failed", "Failed"],
  ];

  // The preview and the test send render for your first contact (defaults only without one).
  async function sampleContact() {
    const page = await api("GET", "/contacts?limit=1");
    return page.data.length ? { contactId: page.data[0].id } : {};
  }

  function attachTools(el, id) {
    const tools = document.createElement("details");
    tools.className = "tools";
    tools.innerHTML =
      "<summary>Preview, test send, retarget</summary>" +
      '<div class="tool-row"><button type="button" class="preview">Preview</button>' +
      '<input class="test-phone" type="tel" placeholder="+14155550123"' +
      ' aria-label="Test phone number"><button type="button" class="send-test">Send test</button>' +
      "</div>" +
      '<div class="tool-row retarget-row"><span class="muted">Retarget</span>' +
      RETARGET.map(
        ([audience, label]) =>
          '<button type="button" class="retarget" data-audience="' + audience + '">' +
          label + "</button>"
      ).join("") +
      "</div>" +
      '<pre class="preview-body" hidden></pre><p class="tool-result" hidden></p>';
    el.appendChild(tools);
    const path = "/campaigns/" + encodeURIComponent(id);
    const preview = tools.querySelector(".preview-body");
    const result = tools.querySelector(".tool-result");
    const show = (text, isError) => {
      result.textContent = text;
      result.classList.toggle("error-text", Boolean(isError));
      result.hidden = !text;
    };
    const run = (button, action) =>
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await action();
        } catch (error) {
          if (error.message !== "unauthorized") show(error.message, true);
        } finally {
          button.disabled = false;
        }
      });
    run(tools.querySelector(".preview"), async () => {
      preview.hidden = true;
      const payload = await api("POST", path + "/preview", await sampleContact());
      preview.textContent = JSON.stringify(payload.data.body, null, 2);
      preview.hidden = false;
      show("");
    });
    run(tools.querySelector(".send-test"), async () => {
      const phone = tools.querySelector(".test-phone").value.trim();
      const body = Object.assign({ phone }, await sampleContact());
      const payload = await api("POST", path + "/test", body);
      const sent = payload.data.sent;
      show(sent ? payload.message + " · " + payload.data.provider_message_id : payload.message, !sent);
    });
    tools.querySelectorAll(".retarget").forEach((button) =>
      run(button, async () => {
        const payload = await api("POST", path + "/retarget", { audience: button.dataset.audience });
        const draft = payload.data;
        campaigns.set(draft.id, draft);
        render(draft);
        show("Draft created: " + draft.name + " · " + draft.total_recipients + " recipients");
      })
    );
  }

  // --- commands ------------------------------------------------------------------------------

  async function onAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const id = button.closest(".campaign").dataset.id;
    const action = button.dataset.action;
    button.disabled = true;
    const epoch = statusEvents.get(id) || 0;
    try {
      const payload = await api("POST", "/campaigns/" + encodeURIComponent(id) + "/" + action);
      notice("");
      if ((statusEvents.get(id) || 0) === epoch) update(id, { status: payload.data.status });
    } catch (error) {
      if (error.message !== "unauthorized") notice(error.message, true);
      button.disabled = false;
    }
  }

  async function onCreate(event) {
    event.preventDefault();
    const form = event.target;
    const audience = form.querySelector('input[name="audience"]:checked').value;
    const schedule = form.querySelector('input[name="schedule"]:checked').value;
    const body = {
      accountId: $("account").value,
      name: $("name").value.trim(),
      messageType: "text",
      messageContent: $("message").value,
      audienceType: audience,
      audienceConfig: {},
      scheduleType: schedule,
      throttleConfig: { messagesPerMinute: Number($("rate").value) },
    };
    if (audience === "tags") {
      body.audienceConfig = {
        tags: $("tags").value.split(",").map((t) => t.trim()).filter(Boolean),
      };
    }
    if ($("track-links").checked) body.trackLinks = true;
    Object.assign(body, abFields(), windowFields());
    const result = $("create-result");
    result.classList.remove("error-text");
    try {
      const payload = await api("POST", "/campaigns", body);
      result.textContent = "Created “" + payload.data.name + "” (" + payload.data.status + ").";
      notice("");
      campaigns.set(payload.data.id, payload.data);
      const el = campaignElement(payload.data.id);
      $("campaigns").prepend(el);
      render(payload.data);
      form.querySelector("#name").value = "";
    } catch (error) {
      if (error.message === "unauthorized") return;
      result.textContent = error.message; // a refused trackLinks names links.base_url
      result.classList.add("error-text");
    }
  }

  // --- live stream ---------------------------------------------------------------------------

  function statusEvent(id) {
    statusEvents.set(id, (statusEvents.get(id) || 0) + 1);
  }

  function setConnection(state) {
    const el = $("connection");
    el.textContent = state;
    el.className = "connection " + state;
  }

  function connect() {
    if (typeof window.io !== "function") {
      $("vendor-missing").hidden = false;
      setConnection("offline");
      return;
    }
    socket = window.io({ auth: { token: token() } });
    socket.on("connect", () => {
      setConnection("live");
      reload().catch((error) => notice(error.message, true));
    });
    socket.on("disconnect", () => setConnection("offline"));
    socket.on("connect_error", (error) => {
      setConnection("offline");
      notice("Live updates: " + error.message, true);
    });
    socket.on("campaign:started", (p) => {
      statusEvent(p.campaignId);
      reload().catch((e) => notice(e.message, true));
    });
    socket.on("campaign:progress", (p) => {
      const c = campaigns.get(p.campaignId);
      if (!c) return;
      const stats = Object.assign({}, c.stats);
      stats.sent = Math.max(stats.sent || 0, p.sentCount || 0);
      stats.failed = Math.max(stats.failed || 0, p.failedCount || 0);
      const change = { progress: p.progress, total_recipients: p.totalRecipients, stats };
      change.waiting_for_window = false; // something was sent: not everything waits
      if (!FINAL.has(c.status) && c.status !== "paused") change.status = "running";
      update(p.campaignId, change);
    });
    socket.on("campaign:stats", (p) => {
      update(p.campaignId, { stats: p.stats, metrics: p.metrics });
      pricingChanged(p.campaignId);
      variantsChanged(p.campaignId);
    });
    socket.on("campaign:paused", (p) => {
      statusEvent(p.campaignId);
      update(p.campaignId, { status: "paused", paused_at: p.pausedAt, error: p.reason || null });
      if (p.reason) eventsChanged();
    });
    socket.on("campaign:resumed", (p) => {
      statusEvent(p.campaignId);
      const c = campaigns.get(p.campaignId);
      if (c && !FINAL.has(c.status)) update(p.campaignId, { status: "running", error: null });
      eventsChanged();
    });
    socket.on("campaign:completed", (p) => {
      statusEvent(p.campaignId);
      if (p.campaign) {
        campaigns.set(p.campaignId, p.campaign);
        render(p.campaign);
      } else {
        update(p.campaignId, { status: "completed", progress: 100 });
      }
    });
    socket.on("campaign:failed", (p) => {
      statusEvent(p.campaignId);
      update(p.campaignId, { status: "failed", error: p.error, completed_at: p.failedAt });
    });
    socket.on("campaign:sample_sent", (p) => refresh(p.campaignId));
    socket.on("campaign:deferred", (p) => refresh(p.campaignId));
    socket.on("campaign:variant_chosen", (p) => refresh(p.campaignId));
    socket.on("campaign:cancelled", (p) => {
      statusEvent(p.campaignId);
      update(p.campaignId, { status: "cancelled" });
      refresh(p.campaignId);
    });
  }

  // --- start-up ------------------------------------------------------------------------------

  function forgetToken(reason) {
    window.localStorage.removeItem(TOKEN_KEY);
    if (socket) {
      socket.disconnect();
      socket = null;
    }
    campaigns.clear();
    $("campaigns").innerHTML = "";
    $("workspace").hidden = true;
    $("forget-token").hidden = true;
    $("login").hidden = false;
    notice(reason || "", Boolean(reason));
  }

  async function open() {
    $("login").hidden = true;
    $("workspace").hidden = false;
    $("forget-token").hidden = false;
    try {
      await Promise.all([loadAccounts(), reload()]);
    } catch (error) {
      if (error.message !== "unauthorized") notice(error.message, true);
      if (!token()) return;
    }
    connect();
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (typeof window.io !== "function") $("vendor-missing").hidden = false;
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      window.localStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      notice("");
      open();
    });
    $("forget-token").addEventListener("click", () => forgetToken(""));
    $("create-form").addEventListener("submit", onCreate);
    $("add-variant").addEventListener("click", () => addVariantRow());
    $("events-account").addEventListener("change", () => {
      loadEvents(false).catch((e) => notice(e.message, true));
    });
    $("events-refresh").addEventListener("click", eventsChanged);
    // Signals that change no campaign, and clicks, send no event: look for them now and then.
    window.setInterval(() => {
      if (token() && !$("workspace").hidden && document.visibilityState === "visible") {
        eventsChanged();
        refreshClicks();
      }
    }, 5000);
    $("events-more").addEventListener("click", () => {
      loadEvents(true).catch((e) => notice(e.message, true));
    });
    for (const radio of document.querySelectorAll('input[name="audience"]')) {
      radio.addEventListener("change", () => {
        $("tags").disabled = radio.value !== "tags" || !radio.checked;
      });
    }
    if (token()) open();
    else $("login").hidden = false;
  });
})();
