// Shared by check.mjs and e2ee.mjs: quiet SDK logging, steps with ok/FAIL lines, waiting for
// events with a timeout, and the summary line CI tooling reads ("<label>: N passed, M failed").
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

// The SDK logs through loglevel; child loggers are created later at DEBUG, so silence them too.
export function quietSDK() {
  const quiet = (l) => {
    l.setLevel(process.env.SDK_LOG || "silent", false);
    const getChild = l.getChild.bind(l);
    l.getChild = (prefix) => quiet(getChild(prefix));
    return l;
  };
  quiet(logger);
}

export function harness({ label, overallMs, stepMs, fatalByDefault }) {
  const t0 = Date.now();
  const results = [];
  const clients = []; // stopped by finish

  function finish(code) {
    for (const c of clients) c.stopClient();
    const failed = results.filter((r) => !r.ok);
    console.log(failed.length === 0
      ? `PASS: ${results.length} steps in ${Date.now() - t0} ms`
      : `FAIL: ${failed.length}/${results.length} steps failed: ${failed.map((r) => r.name).join("; ")}`);
    console.log(`${label}: ${results.length - failed.length} passed, ${failed.length} failed`);
    process.exit(code ?? (failed.length ? 1 : 0));
  }
  setTimeout(() => {
    console.log(`FAIL: overall timeout of ${overallMs / 1000}s exceeded`);
    results.push({ name: "overall timeout", ok: false });
    finish(1);
  }, overallMs).unref?.();

  function describe(e) {
    if (e?.httpStatus !== undefined) {
      return `${e.message} [status=${e.httpStatus} errcode=${e.errcode ?? "-"} body=${JSON.stringify(e.data)}]`;
    }
    return e?.stack || String(e);
  }

  // Runs one step; a failed "fatal" step ends the run, others are recorded and the run goes on.
  async function step(name, fn, { fatal = fatalByDefault } = {}) {
    const start = Date.now();
    try {
      await fn();
      results.push({ name, ok: true });
      console.log(`ok   ${name} (${Date.now() - start} ms)`);
    } catch (e) {
      results.push({ name, ok: false });
      console.log(`FAIL ${name} (${Date.now() - start} ms): ${describe(e)}`);
      if (fatal) finish(1);
    }
  }

  // Resolves when `emitter` emits `event` with args satisfying `pred`; listen before acting.
  function waitFor(emitter, event, pred, what, ms = stepMs) {
    let cleanup;
    const p = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      const listener = (...args) => {
        if (pred(...args)) { cleanup(); resolve(args); }
      };
      cleanup = () => { clearTimeout(timer); emitter.off(event, listener); };
      emitter.on(event, listener);
    });
    p.cancel = () => cleanup();
    p.catch(() => {}); // a step may fail before awaiting it: don't crash on an unhandled rejection
    return p;
  }

  return { results, clients, finish, step, waitFor, describe };
}

// Polls `check` (async, returns a truthy value when done) every 200 ms.
export async function poll(check, what, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Registers localpart on hs with m.login.dummy, as Element does (a 401 first, then the stage).
export async function register(hs, localpart, password = "correct-horse-battery-staple") {
  const anon = sdk.createClient({ baseUrl: hs, logger });
  let session = null;
  try {
    const res = await anon.registerRequest({ username: localpart, password });
    if (res.access_token) return res;
  } catch (e) {
    if (e.httpStatus !== 401) throw e;
    session = e.data.session ?? null;
  }
  return anon.register(localpart, password, session, { type: "m.login.dummy" });
}

