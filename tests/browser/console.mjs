// End-to-end test of the sessiond web console in a real browser (Debian's
// chromium, driven by playwright-core). Run by tests/it/console/browser.rs against a real
// `sessiond serve`; prints one JSON line of results and exits non-zero on failure.
//
// Environment: BASE (http://127.0.0.1:PORT), ADMIN_PASSWORD, PLAIN_USER,
// PLAIN_PASSWORD, SHOTS (screenshot directory), PLAYWRIGHT_DIR (where
// playwright-core is installed), CHROMIUM (the browser binary).
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import path from "node:path";

const require = createRequire(path.join(process.env.PLAYWRIGHT_DIR, "package.json"));
const { chromium } = require("playwright-core");

const BASE = process.env.BASE;
const SHOTS = process.env.SHOTS;
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD;
const PLAIN_USER = process.env.PLAIN_USER;
const PLAIN_PASSWORD = process.env.PLAIN_PASSWORD;
const TIMEOUT = 15000;
const results = { steps: [] };

function step(name) {
  results.steps.push(name);
  process.stderr.write(`browser: ${name}\n`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

// A Commvault client (not the browser): POST /Login with the base64 password.
async function commvaultLogin(user, password) {
  const r = await fetch(`${BASE}/Login`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username: user, password: Buffer.from(password).toString("base64") }),
  });
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.ok(body.token && body.token.startsWith("QSDK "), JSON.stringify(body));
  return body.token;
}

async function commvaultStatus(token) {
  const r = await fetch(`${BASE}/User`, { headers: { Authtoken: token, Accept: "application/json" } });
  return r.status;
}

async function signIn(page, user, password, { keyboard = false } = {}) {
  await page.goto(`${BASE}/ui`);
  await page.waitForURL(/\/ui\/login/);
  if (keyboard) {
    // Keyboard only: the user name field has focus; Tab to the password; Enter submits.
    await page.locator("#username").focus();
    await page.keyboard.type(user);
    await page.keyboard.press("Tab");
    await page.keyboard.type(password);
    await page.keyboard.press("Enter");
  } else {
    await page.getByLabel("User name").fill(user);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
  }
}

function sessionRow(page, text) {
  return page.locator("#sessions tbody tr", { hasText: text });
}

async function noHorizontalScroll(page) {
  const { scroll, inner } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  assert.ok(scroll <= inner, `page is ${scroll}px wide in a ${inner}px viewport`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  // ---- an administrator at desktop width ----
  const admin = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  admin.setDefaultTimeout(TIMEOUT);
  const page = await admin.newPage();

  await page.goto(`${BASE}/ui`);
  await page.waitForURL(/\/ui\/login/);
  await shot(page, "01-login");
  step("an anonymous visitor is sent to the sign-in page");

  await signIn(page, "admin", "not-the-password");
  await page.locator("#login-error").waitFor();
  assert.match(await page.locator("#login-error").innerText(), /Wrong user name or password/);
  await shot(page, "02-login-wrong-password");
  step("a wrong password shows an error on the page");

  await signIn(page, "admin", ADMIN_PASSWORD);
  await page.waitForURL(/\/ui\/sessions/);
  const own = sessionRow(page, "you");
  await own.waitFor();
  assert.match(await own.innerText(), /sessiond web console/);
  assert.match(await own.innerText(), /idle < 1 min/);
  step("signed in, the own session is listed as the web console");

  await page.locator("#live-status", { hasText: "Live updates on" }).waitFor();
  await page.evaluate(() => { window.__notReloaded = true; });
  const cvToken = await commvaultLogin(PLAIN_USER, PLAIN_PASSWORD);
  assert.equal(await commvaultStatus(cvToken), 200);
  const cvRow = sessionRow(page, PLAIN_USER);
  await cvRow.waitFor();
  assert.match(await cvRow.innerText(), /command line/);
  assert.match(await cvRow.innerText(), /Commvault/);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was reloaded");
  await shot(page, "03-sessions-live-row");
  step("a Commvault login appears without a reload");

  await cvRow.getByRole("link", { name: "End session" }).click();
  await page.waitForURL(/\/end$/);
  assert.match(await page.locator("main").innerText(), new RegExp(`End this session of ${PLAIN_USER}`));
  await shot(page, "04-confirm-end-session");
  await page.getByRole("button", { name: "End session" }).click();
  await page.waitForURL(/notice=ended/);
  assert.equal(await sessionRow(page, PLAIN_USER).count(), 0, "the ended session is still listed as live");
  assert.equal(await commvaultStatus(cvToken), 401);
  step("ended from the page after confirming; the Commvault client now gets 401");

  // The ended session with its reason.
  await page.getByLabel("State").selectOption("ended");
  await page.getByRole("button", { name: "Show" }).click();
  await page.waitForURL(/state=ended/);
  assert.match(await sessionRow(page, PLAIN_USER).first().innerText(), /ended: revoked/);
  step("ended sessions are listed with their end reason");

  // Live end: a session ended elsewhere is marked ended in place.
  await page.goto(`${BASE}/ui/sessions`);
  await page.locator("#live-status", { hasText: "Live updates on" }).waitFor();
  const second = await commvaultLogin(PLAIN_USER, PLAIN_PASSWORD);
  await sessionRow(page, PLAIN_USER).waitFor();
  const out = await fetch(`${BASE}/Logout`, { method: "POST", headers: { Authtoken: second } });
  assert.equal(out.status, 200);
  await page.locator("#sessions tbody tr.ended", { hasText: "signed out" }).waitFor();
  step("a logout elsewhere marks the row ended without a reload");

  await page.getByRole("link", { name: "Users" }).click();
  await page.waitForURL(/\/ui\/users$/);
  await page.getByLabel("User name").fill("carol");
  await page.getByLabel("Password", { exact: true }).fill("carol-password");
  await page.getByLabel("Full name").fill("Carol Operator");
  await page.getByRole("checkbox", { name: /^view/ }).check();
  await page.getByRole("button", { name: "Create user" }).click();
  await page.waitForURL(/\/ui\/users\/\d+\?notice=created/);
  await shot(page, "06-user-detail");
  await page.getByRole("button", { name: "Disable carol" }).click();
  await page.waitForURL(/notice=saved/);
  assert.equal(await page.locator("#status").innerText(), "disabled");
  await page.getByRole("link", { name: "← Users" }).click();
  await page.locator("#users tbody tr", { hasText: "carol" }).waitFor();
  await shot(page, "05-users");
  step("users view: create, disable");

  await page.getByRole("link", { name: "Audit" }).click();
  await page.waitForURL(/\/ui\/audit/);
  await page.locator("#audit tbody tr", { hasText: "login.failed" }).first().waitFor();
  await page.getByLabel("Event").selectOption("user.disabled");
  await page.getByRole("button", { name: "Show" }).click();
  await page.waitForURL(/kind=user.disabled/);
  assert.equal(await page.locator("#audit tbody tr").count(), 1);
  await page.getByLabel("Event").selectOption("");
  await page.getByRole("button", { name: "Show" }).click();
  await page.waitForURL(/kind=$/);
  await shot(page, "07-audit");
  step("audit view with a filter");

  // ---- a plain user on a phone ----
  const phone = await browser.newContext({
    viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  phone.setDefaultTimeout(TIMEOUT);
  const p = await phone.newPage();
  await signIn(p, PLAIN_USER, PLAIN_PASSWORD, { keyboard: true });
  await p.waitForURL(/\/ui\/sessions/);
  await sessionRow(p, "you").waitFor();
  await p.locator("#live-status", { hasText: "Live updates on" }).waitFor();
  await noHorizontalScroll(p);
  assert.equal(await p.getByRole("link", { name: "Users" }).count(), 0);
  assert.equal(await sessionRow(p, "admin").count(), 0, "a plain user sees the admin's session");
  // Another user's login stays invisible; the user's own new one appears live.
  await commvaultLogin("admin", ADMIN_PASSWORD);
  await commvaultLogin(PLAIN_USER, PLAIN_PASSWORD);
  await p.locator("#sessions tbody tr", { hasText: "command line" }).waitFor();
  assert.equal(await sessionRow(p, "admin").count(), 0, "a plain user was shown the admin's new session");
  await shot(p, "08-phone-sessions");
  step("a plain user on a phone sees only own sessions, live");

  const users = await p.goto(`${BASE}/ui/users`);
  assert.equal(users.status(), 403);
  assert.match(await p.locator("main").innerText(), /do not have permission/);
  await noHorizontalScroll(p);
  await shot(p, "09-phone-users-forbidden");
  const others = await p.goto(`${BASE}/ui/sessions?user=admin`);
  assert.equal(others.status(), 403);
  step("a plain user cannot open the users view or others' sessions");

  await p.goto(`${BASE}/ui/sessions`);
  await p.getByRole("button", { name: "Sign out" }).click();
  await p.waitForURL(/\/ui\/login\?notice=signed-out/);
  const after = await p.goto(`${BASE}/ui/sessions`);
  assert.match(after.url(), /\/ui\/login/);
  step("sign-out ends the console session");

  await page.bringToFront();
  await page.setViewportSize({ width: 375, height: 740 });
  await page.goto(`${BASE}/ui/sessions?state=all`);
  await noHorizontalScroll(page);
  await shot(page, "10-phone-admin-sessions");
  step("the administrator's sessions view fits a phone");
} finally {
  await browser.close();
}
results.ok = true;
process.stdout.write(JSON.stringify(results) + "\n");
