// The dashboard in a real headless Chromium: every page loads, its figures match the store (read through the
// admin API and the CLI), and a click goes from a task to one of its calls.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import net from "node:net";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../..");
const target = process.env.CARGO_TARGET_DIR || join(root, "target");
const bin = name => join(target, "debug", name);
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = "ui-test-token";
const procs = [];
let url, db, config, browser;

const freePort = () => new Promise(ok => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); }); });
const sleep = ms => new Promise(ok => setTimeout(ok, ms));

async function post(body) {
  const r = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  assert.equal(r.status, 200);
  return r;
}

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "leanlm-ui-"));
  db = `sqlite://${join(dir, "calls.db")}`;
  // A labelled task for the validation pages: the mock answers these questions with their label, and the
  // `cheap` model gets 40% of them wrong.
  const { writeFileSync } = await import("node:fs");
  const questions = Array.from({ length: 120 }, (_, i) => `question number ${i} about my account`);
  writeFileSync(join(dir, "labels.csv"), "text,label\n" + questions.map((q, i) => `${q},label_${i % 5}`).join("\n") + "\n");
  const mock = spawn(bin("leanlm-mock"), ["--listen", "127.0.0.1:0", "--labels", join(dir, "labels.csv"), "--accuracy", "cheap=0.6"],
    { stdio: ["ignore", "pipe", "inherit"] });
  procs.push(mock);
  const mockAddr = await new Promise(ok => mock.stdout.once("data", d => ok(d.toString().trim())));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  config = join(dir, "leanlm.toml");
  writeFileSync(config, `[providers.openai]\nkind = "openai"\nbase_url = "http://${mockAddr}/v1"\napi_key = "sk"\n` +
    `[models.cheap]\nprovider = "openai"\nupstream = "cheap"\nprice = { input = 0.1, output = 0.4 }\n[catalog]\nallow = ["cheap"]\n` +
    // The semantic cache on for the label task only, named by its discovered name, with a bound of its own.
    `[cache.semantic]\nverify = 0\n[cache.tasks."label-account-question-label-id"]\nsemantic = true\nsemantic_bound = 0.3\n`);
  procs.push(spawn(bin("leanlm"), ["serve", "--config", config, "--listen", `127.0.0.1:${port}`, "--db", db],
    { env: { ...process.env, LEANLM_ADMIN_TOKEN: TOKEN }, stdio: "ignore" }));
  for (let i = 0; i < 100; i++) { try { if ((await fetch(`${url}/healthz`)).ok) break; } catch {} await sleep(100); }

  const classify = q => ({ model: "gpt-4o", max_tokens: 4, messages: [
    { role: "system", content: "Classify the customer's message into one of: lost_card, card_arrival, top_up, refund, other. Answer with the intent only." },
    { role: "user", content: q }] });
  for (const q of ["I lost my card", "my card has not arrived", "top up failed", "PIN blocked", "refund please", "card declined", "exchange rate?", "cash withdrawal pending"]) await post(classify(q));
  for (const t of ["hello", "see you tomorrow", "thanks a lot"]) await post({ model: "gpt-4o-mini", messages: [{ role: "system", content: "Translate the user's message into French." }, { role: "user", content: t }] });
  await Promise.all(questions.map(q => post({ model: "gpt-4o", temperature: 0, messages: [
    { role: "system", content: "Label the account question with its label id." }, { role: "user", content: q }] })));
  // The call log is written asynchronously: wait until all 131 calls are in it.
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${url}/api/calls?limit=1000`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    if ((await r.json()).length === 131) break;
    await sleep(50);
  }
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
});

after(async () => {
  await browser?.close();
  for (const p of procs) p.kill("SIGTERM");
});

const cli = (...args) => JSON.parse(execFileSync(bin("leanlm"), [...args, "--db", db], { encoding: "utf8" }));

// Money as the CLI and dashboard show it: to the cent from a cent up, four significant digits below.
const money = v => v >= 0.01 ? "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
  : v === 0 ? "$0.00" : "$" + String(Number(v.toPrecision(4)));

/// Every card and table of the page fits the viewport's width: nothing scrolls sideways, nothing spills.
async function assertFits(p, where) {
  const over = await p.evaluate(() => {
    const bad = [];
    if (document.documentElement.scrollWidth > innerWidth + 1) bad.push(`page ${document.documentElement.scrollWidth} > ${innerWidth}`);
    for (const el of document.querySelectorAll(".card, .scroll, main")) {
      if (el.scrollWidth > el.clientWidth + 1) bad.push(`${el.className} ${el.querySelector("h2")?.textContent || ""} ${el.scrollWidth} > ${el.clientWidth}`);
    }
    return bad;
  });
  assert.deepEqual(over, [], `${where} overflows`);
}

/// Screenshots a page at 1,400 and 1,024 px and checks that nothing overflows at either width.
async function checkWidths(p, name) {
  for (const width of [1400, 1024]) {
    await p.setViewportSize({ width, height: 900 });
    // Charts size themselves when drawn: redraw the page at this width.
    await p.evaluate(() => { document.body.dataset.ready = ""; route(); });
    await p.waitForFunction(() => document.body.dataset.ready !== "");
    await assertFits(p, `${name} at ${width} px`);
    await p.screenshot({ path: join(tmpdir(), `leanlm-ui-${name}-${width}.png`), fullPage: true });
  }
}

async function page(hash) {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p = await ctx.newPage();
  await p.goto(`${url}/ui#token=${TOKEN}`);
  await p.waitForSelector("body[data-ready]");
  if (hash) { await p.evaluate(h => { location.hash = h; }, hash); await p.waitForFunction(h => document.body.dataset.ready === h.slice(1), hash); }
  return p;
}

test("without a token the dashboard asks for one", async () => {
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  await p.goto(`${url}/ui`);
  await p.waitForSelector("#login");
  assert.match(await p.textContent("#login"), /token/i);
});

test("overview figures match the store", async () => {
  const spend = cli("spend", "--json");
  const calls = spend.reduce((s, r) => s + r.calls, 0);
  const p = await page();
  assert.equal(await p.textContent('[data-testid="calls"]'), String(calls));
  assert.equal(await p.textContent('[data-testid="tasks"]'), String(cli("tasks", "--json").length));
  const cost = spend.reduce((s, r) => s + r.cost_usd, 0);
  assert.equal(await p.textContent('[data-testid="spend"]'), money(cost));
  // Drawn by the bundled chart library: spend by model and calls by task, each with its lines named.
  for (const id of ["chart-spend", "chart-calls"]) {
    assert.ok(await p.$(`[data-testid="${id}"] canvas`), `${id} is drawn`);
  }
  const legend = await p.textContent('[data-testid="chart-spend"] .u-legend');
  for (const r of spend) assert.ok(legend.includes(r.key), `${r.key} in ${legend}`);
  // The savings figure is the tasks' monthly figure, the one the CLI prints.
  const monthly = cli("tasks", "--json", "--config", config).reduce((s, t) => s + Math.max(0, t.profile.savings?.monthly_savings_usd || 0), 0);
  assert.ok(monthly > 0, "the allowed cheap model would save something");
  assert.equal(await p.textContent('[data-testid="savings"]'), money(monthly));
  await checkWidths(p, "overview");
});

test("tasks page lists every task and a click leads to its calls", async () => {
  const tasks = cli("tasks", "--json");
  const p = await page("#/tasks");
  assert.equal((await p.$$('[data-testid="task-row"]')).length, tasks.length);
  const classify = tasks.find(t => t.profile.type?.type === "classify" && t.task.name.includes("classify"));
  assert.ok(classify, "the classification task was typed classify");
  await p.click(`[data-task="${classify.task.id}"]`);
  await p.waitForSelector('[data-testid="task-name"]');
  assert.equal(await p.textContent('[data-testid="task-calls"]'), String(classify.profile.calls));
  assert.equal((await p.textContent('[data-testid="task-type"]')).trim(), "classify");
  await p.click('[data-testid="call-row"]');
  await p.waitForSelector('[data-testid="request"]');
  assert.match(await p.textContent('[data-testid="request"]'), /Classify the customer/);
  assert.match(await p.textContent('[data-testid="call-status"]'), /ok 200/);
  await checkWidths(p, "call");
});

test("the call explorer filters by task and model", async () => {
  const tasks = cli("tasks", "--json");
  const translate = tasks.find(t => t.task.name.includes("translate"));
  assert.ok(translate, tasks.map(t => t.task.name).join(", "));
  const p = await page(`#/calls?task=${translate.task.id}`);
  assert.equal((await p.$$('[data-testid="call-row"]')).length, translate.profile.calls);
  await p.fill('input[name="task"]', "");
  await p.fill('input[name="model"]', "gpt-4o-mini");
  await p.click("form#f button");
  await p.waitForFunction(() => document.body.dataset.ready.includes("model=gpt-4o-mini"));
  assert.equal((await p.$$('[data-testid="call-row"]')).length, 3);
  // Each row says its task and provider.
  assert.match(await p.textContent('[data-testid="call-row"]'), /translate/);
  assert.match(await p.textContent('[data-testid="call-row"]'), /openai/);
  // Search by the first characters of a call's id finds that call alone.
  const one = cli("calls", "--json", "--limit", "1");
  await p.goto(`${url}/ui#/calls?id=${one.id.slice(0, 24)}`);
  await p.waitForFunction(() => document.body.dataset.ready?.includes("id="));
  const rows = await p.$$('[data-testid="call-row"]');
  assert.equal(rows.length, 1);
  // Filters the store knows: no call was a cache hit yet, and no policy was deployed.
  for (const [q, n] of [["cache=hit", 0], ["policy=replacement", 0], ["policy=none", 131], ["status=ok", 131]]) {
    await p.goto(`${url}/ui#/calls?${q}&limit=1000`);
    await p.waitForFunction(q => document.body.dataset.ready?.includes(q), q);
    assert.equal((await p.$$('[data-testid="call-row"]')).length, n, q);
  }
  // A bad filter is refused with the field named, shown on the page.
  await p.goto(`${url}/ui#/calls?cache=warm`);
  await p.waitForSelector(".card.err");
  assert.match(await p.textContent(".card.err"), /`cache`/);
  await p.goto(`${url}/ui#/calls`);
  await p.waitForFunction(() => document.body.dataset.ready === "/calls");
  await checkWidths(p, "calls");
});

test("the time range picker narrows every page, and custom dates are honoured", async () => {
  const p = await page();
  const calls = Number(await p.textContent('[data-testid="calls"]'));
  assert.ok(calls > 0);
  // Custom: a range that ended yesterday holds none of today's calls.
  await p.selectOption('[data-testid="range"]', "custom");
  const day = 86400000, today = Date.now() - Date.now() % day;
  await p.fill('input[name="from"]', new Date(today - 7 * day).toISOString().slice(0, 10));
  await p.fill('input[name="to"]', new Date(today - day).toISOString().slice(0, 10));
  await p.dispatchEvent('input[name="to"]', "change");
  await p.waitForFunction(() => document.querySelector('[data-testid="calls"]')?.textContent === "0");
  assert.equal(await p.textContent('[data-testid="tasks"]'), "0");
  // The range holds across pages (the call list is empty too) and back to 24 hours brings them back.
  await p.evaluate(() => { location.hash = "#/calls"; });
  await p.waitForFunction(() => document.body.dataset.ready === "/calls");
  assert.equal((await p.$$('[data-testid="call-row"]')).length, 0);
  await p.selectOption('[data-testid="range"]', "1");
  await p.waitForFunction(() => document.querySelectorAll('[data-testid="call-row"]').length > 0);
  // The API refuses a window that ends before it starts, in its own error shape.
  const r = await fetch(`${url}/api/calls?since_ms=10&until_ms=5`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /since_ms/);
  for (const [path, says] of [["savings?by=week", /`by`/], ["series?by=colour", /`by`/], ["tasks?days=-1", /`days`/], ["calls?policy=maybe", /`policy`/]]) {
    const bad = await fetch(`${url}/api/${path}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    assert.equal(bad.status, 400, path);
    assert.match((await bad.json()).error.message, says, path);
  }
});

test("a validation run by the CLI shows in the dashboard, with its verdict and disagreements", async () => {
  const task = cli("tasks", "--json").find(t => t.task.name.includes("label"));
  assert.ok(task, "the labelled task exists");
  let report;
  try {
    execFileSync(bin("leanlm"), ["validate", "--task", task.task.id, "--candidate", "cheap", "--seed", "1", "--json", "--config", config, "--db", db],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    assert.fail("a 60% candidate must not pass");
  } catch (e) {
    assert.equal(e.status, 2, e.stderr);
    report = JSON.parse(e.stdout);
  }
  assert.equal(report.verdict.passed, false);
  const p = await page(`#/tasks/${task.task.id}`);
  assert.equal((await p.$$('[data-testid="candidate-row"]')).length >= 1, true, "the cheap model is a candidate");
  assert.match(await p.textContent('[data-testid="candidate-table"]'), /model:cheap/);
  await p.click('[data-testid="validation-row"]');
  await p.waitForSelector('[data-testid="validation-verdict"]');
  assert.match(await p.textContent('[data-testid="validation-verdict"]'), /FAIL/);
  assert.equal(await p.textContent('[data-testid="validation-reason"]'), report.verdict.reason);
  assert.equal((await p.$$('[data-testid="failure-table"] tr')).length - 1, report.failures.length);
  // The Markdown export is the CLI's report.
  const md = await p.evaluate(async id => (await fetch(`/api/validations/${id}?format=md`,
    { headers: { Authorization: "Bearer " + sessionStorage.getItem("leanlm-token") } })).text(), report.id);
  assert.match(md, /# Validation .*: FAIL/);
  await checkWidths(p, "validation");
  const list = await page("#/validations");
  assert.equal((await list.$$('[data-testid="validation-row"]')).length, 1);
  await checkWidths(list, "validations");
  const taskPage = await page(`#/tasks/${task.task.id}`);
  await checkWidths(taskPage, "task");
});

test("policies: deployed through the admin API, refused and rolled back from the dashboard, every change logged", async () => {
  const task = cli("tasks", "--json").find(t => t.task.name.includes("label"));
  const post = (path, body) => fetch(`${url}/api/${path}`, { method: "POST", body: JSON.stringify(body),
    headers: { "content-type": "application/json", Authorization: `Bearer ${TOKEN}` } });
  // Canary needs a passing validation; the only one failed: the state refuses it (409), the request is fine.
  let r = await post(`policies/${task.task.id}/deploy`, { replacement: "cheap", stage: "canary" });
  assert.equal(r.status, 409);
  assert.match((await r.json()).error.message, /no passing validation/);
  r = await post(`policies/${task.task.id}/deploy`, { replacement: "cheap", stage: "shadow", bogus: 1 });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /bogus/);
  r = await post(`policies/${task.task.id}/deploy`, { replacement: "cheap", stage: "shadow", audit_rate: 0.5 });
  assert.equal(r.status, 200, await r.clone().text());

  const p = await page("#/policies");
  assert.equal(await p.textContent('[data-testid="policy-stage"]'), "shadow");
  // Promoting an unvalidated shadow is refused, with the reason shown.
  const alerted = new Promise(ok => p.once("dialog", async d => { const m = d.message(); await d.accept(); ok(m); }));
  await p.click('button[data-act="promote"]');
  assert.match(await alerted, /no passing validation/);
  // Rolling back asks why, and the reason lands in the audit log.
  p.once("dialog", d => d.accept("testing the dashboard"));
  await p.click('button[data-act="rollback"]');
  await p.waitForFunction(() => document.querySelector('[data-testid="policy-stage"]')?.textContent === "rolled_back");
  const log = execFileSync(bin("leanlm"), ["policy-log", "--json", "--db", db], { encoding: "utf8" })
    .trim().split("\n").map(l => JSON.parse(l));
  assert.deepEqual(log.map(e => [e.action, e.actor, e.to_stage]), [["rollback", "api", "rolled_back"], ["deploy", "api", "shadow"]]);
  assert.equal(log[0].reason, "testing the dashboard");
  assert.equal((await p.$$('[data-testid="audit-row"]')).length, 2);
  // Policies and their changes name the task, not only its id.
  assert.equal(await p.textContent('[data-testid="policy-task"]'), task.task.name);
  assert.match(await p.textContent('[data-testid="audit-table"]'), new RegExp(task.task.name));
  await checkWidths(p, "policies");
  // The overview's stage chart replays the log: a policy stood at shadow, then rolled back.
  const o = await page();
  assert.ok(await o.$('[data-testid="chart-stages"] canvas'), "stages are charted");
  assert.match(await o.textContent('[data-testid="chart-stages"] .u-legend'), /rolled_back/);
});

test("cache: semantic hits and the measured false-hit rate, as the CLI reports them", async () => {
  // The same questions in capitals: another exact-cache key, the same meaning (MiniLM is uncased). The
  // first ones teach the task's threshold (a 30% bound needs 9 clean verified hits); the rest are served.
  const caps = Array.from({ length: 16 }, (_, i) => `QUESTION NUMBER ${i} ABOUT MY ACCOUNT`);
  const served = [];
  for (const q of caps) {
    const r = await post({ model: "gpt-4o", temperature: 0, messages: [
      { role: "system", content: "Label the account question with its label id." }, { role: "user", content: q }] });
    served.push(r.headers.get("x-leanlm-cache"));
    await r.json();
    await sleep(30);
  }
  assert.ok(served.includes("semantic-hit"), served.join(","));
  const hits = served.filter(c => c === "semantic-hit").length;
  let row;
  for (let i = 0; i < 100; i++) {
    row = JSON.parse(execFileSync(bin("leanlm"), ["cache", "--json", "--db", db, "--config", config], { encoding: "utf8" }))
      .find(r => r.semantic_hits > 0);
    if (row?.semantic_hits === hits) break;
    await sleep(50);
  }
  assert.equal(row.semantic_hits, hits);
  assert.equal(row.estimate.false_hits, 0);
  const p = await page("#/cache");
  const ui = await p.$(`[data-testid="cache-row"][data-task="${row.task_id}"]`);
  assert.ok(ui, "the task's row");
  assert.equal(await ui.$eval('[data-testid="cache-threshold"]', e => e.textContent), row.estimate.threshold.toFixed(3));
  assert.match(await ui.$eval('[data-testid="cache-false-rate"]', e => e.textContent), /^0\.0%/);
  // The task page carries the same row.
  const t = await page(`#/tasks/${encodeURIComponent(row.task_id)}`);
  assert.ok(await t.$('[data-testid="cache-row"]'));
  await checkWidths(p, "cache");
  // Cache hits are charted on the overview.
  const o = await page();
  assert.match(await o.textContent('[data-testid="chart-cache"] .u-legend'), /semantic hits/);
  // What they saved, as the CLI reports it: the Savings page's total and its technique.
  const saved = cli("savings", "--json", "--by", "technique");
  assert.equal(saved.total.calls, hits, JSON.stringify(saved));
  const sp = await page("#/savings");
  assert.equal(await sp.textContent('[data-testid="saved"]'), money(saved.total.saved_usd));
  assert.match(await sp.textContent('[data-testid="savings-by-technique"]'), /semantic cache/);
  assert.match(await sp.textContent('[data-testid="savings-by-task"]'), /label-account/);
  assert.ok(await sp.$('[data-testid="chart-savings"] canvas'), "savings are charted");
  await checkWidths(sp, "savings");
});
