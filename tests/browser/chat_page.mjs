// Drives Debian's Chromium, headless, through the chat page as a person would. Run by
// tests/browser.rs, whose TCP member `tcpbob` is in the rooms `lobby` and `dev`:
//   node tests/browser/chat_page.mjs http://127.0.0.1:PORT/ SCREENSHOT.png
// 1. alice's page, before it has a name: Join is disabled, and a join typed or sent
//    anyway is answered in plain words. carol's page asks for the name alice, taken.
// 2. Both pages join the lobby with the Join button; it prints "ready", then both say
//    hello and must see each other's messages and tcpbob's.
// 3. alice: /join dev, a message there, a click back to the lobby and a message there,
//    /msg tcpbob, an unknown /command, /list, /leave; carol: the Leave button; alice:
//    /help.
//    tests/browser.rs checks from tcpbob's side what reached the rooms.
// Neither page may ever show the protocol's JSON. Exits 0 when every step was seen,
// 1 otherwise.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const timeout = 15000;
const NO_NAME = "! choose a name first: type it under Your name and press Set name";

// Waits until at least `count` lines of the page's log contain `text`.
async function logShows(page, text, count = 1) {
  const shown = ([text, count]) => [...document.querySelectorAll("#log div")]
    .filter((line) => line.textContent.includes(text)).length >= count;
  try {
    await page.waitForFunction(shown, [text, count], { timeout });
  } catch (error) {
    throw new Error(`the log did not show ${JSON.stringify(text)} ${count} time(s): ${error.message}`);
  }
}
// Types a line into the message box and sends it with Enter.
async function type(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}
function check(condition, what) {
  if (!condition) throw new Error(what);
}
async function takeName(page, name) {
  await page.fill("#name", name);
  await page.click("#hello-form button");
}
async function openPage() {
  const page = await browser.newPage({ viewport: { width: 900, height: 500 } });
  await page.goto(url);
  await page.getByText("connected: choose a name").waitFor({ timeout });
  return page;
}

try {
  // 1. No join before a name, and the refusals in plain words.
  const alice = await openPage();
  check(await alice.isDisabled("#join-form button"), "Join is enabled before a name");
  await type(alice, "/join lobby");
  await logShows(alice, NO_NAME);
  // The page would not send it; the server's own refusal must read as plainly.
  await alice.evaluate(() => send({ type: "join", room: "lobby" }));
  await logShows(alice, NO_NAME, 2);
  await takeName(alice, "alice");
  await alice.locator("#me").getByText("you are alice").waitFor({ timeout });
  check(await alice.isEnabled("#join-form button"), "Join is disabled after the name");

  const carol = await openPage();
  await takeName(carol, "alice");
  await logShows(carol, "! the name alice is taken; choose another");
  await takeName(carol, "carol");
  await carol.locator("#me").getByText("you are carol").waitFor({ timeout });

  // 2. Both join the lobby and talk there with tcpbob.
  const pages = [["alice", alice], ["carol", carol]];
  for (const [, page] of pages) {
    await page.click("#join-form button");
    await logShows(page, "* you joined lobby");
  }
  console.log("ready");
  for (const [name, page] of pages) await type(page, `hello from ${name}`);
  for (const [, page] of pages) {
    for (const from of ["alice", "carol", "tcpbob"]) await logShows(page, `[lobby] ${from}: hello from`);
    await page.locator("#members").getByText("tcpbob").waitFor({ timeout });
  }

  // 3. The commands, the room list and the Leave button.
  await type(alice, "/join dev");
  await logShows(alice, "* you joined dev");
  await type(alice, "hello dev");
  await logShows(alice, "[dev] alice: hello dev");
  await alice.locator("#rooms").getByRole("button", { name: "lobby" }).click();
  await logShows(alice, "* now talking in lobby");
  await type(alice, "back in the lobby");
  await logShows(alice, "[lobby] alice: back in the lobby");
  await alice.locator("#rooms").getByRole("button", { name: "dev" }).click();
  await type(alice, "/msg tcpbob psst");
  await logShows(alice, "(dm alice -> tcpbob) psst");
  await type(alice, "/frobnicate now");
  await logShows(alice, "! unknown command /frobnicate; /help lists the commands");
  await type(alice, "/list");
  await logShows(alice, "dev (2: tcpbob, alice)");
  await alice.screenshot({ path: screenshot });
  await type(alice, "/leave");
  await logShows(alice, "* you left dev; what you type now goes to lobby");
  await carol.click("#leave");
  await logShows(carol, "* you left lobby; join a room to talk again");
  check(await carol.isDisabled("#leave"), "Leave is enabled in no room");
  await type(alice, "/help");
  await logShows(alice, "/leave [ROOM]: leave ROOM");

  for (const [name, page] of pages) {
    const text = await page.evaluate(() => document.body.innerText);
    for (const protocol of ["say hello first", '{"type"', "frobnicate now"]) {
      check(!text.includes(protocol), `${name}'s page shows ${protocol}`);
    }
  }
  console.log("done");
  await browser.close();
  process.exit(0);
} catch (error) {
  console.error(`the chat page failed: ${error}`);
  await browser.close();
  process.exit(1);
}
