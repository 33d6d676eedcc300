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

async function page(hash) {
  const ctx = await browser.newContext();
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
  assert.equal(await p.textContent('[data-testid="spend"]'), "$" + cost.toFixed(6));
  assert.ok(await p.$("svg.bars rect"), "spend-per-day chart is drawn");
  await p.screenshot({ path: join(tmpdir(), "leanlm-ui-overview.png"), fullPage: true });
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
  await p.screenshot({ path: join(tmpdir(), "leanlm-ui-call.png"), fullPage: true });
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
  const list = await page("#/validations");
  assert.equal((await list.$$('[data-testid="validation-row"]')).length, 1);
  await p.screenshot({ path: join(tmpdir(), "leanlm-ui-validation.png"), fullPage: true });
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
  await p.screenshot({ path: join(tmpdir(), "leanlm-ui-policies.png"), fullPage: true });
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
  await p.screenshot({ path: join(tmpdir(), "leanlm-ui-cache.png"), fullPage: true });
});
