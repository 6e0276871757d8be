// Drives Debian's Chromium, headless, through the chat page as a person would: two
// pages pick names, join the lobby, and send messages; each must see both pages'
// messages and the TCP member's. Run by tests/browser.rs:
//   node tests/browser/chat_page.mjs http://127.0.0.1:PORT/ SCREENSHOT.png
// It prints "ready" once both pages are in the lobby, then waits for the TCP member's
// message; it exits 0 when every page saw everything, 1 otherwise.
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
try {
  const pages = [];
  for (const name of ["alice", "carol"]) {
    const page = await browser.newPage({ viewport: { width: 900, height: 500 } });
    await page.goto(url);
    await page.fill("#name", name);
    await page.click("#hello-form button");
    await page.getByText(`you are ${name}`).waitFor({ timeout });
    await page.click("#join-form button");
    await page.getByText(`* ${name} joined lobby`).waitFor({ timeout });
    pages.push([name, page]);
  }
  console.log("ready");
  for (const [name, page] of pages) {
    await page.fill("#text", `hello from ${name}`);
    await page.press("#text", "Enter");
  }
  for (const [, page] of pages) {
    for (const from of ["alice", "carol", "tcpbob"]) {
      await page.getByText(`[lobby] ${from}: hello from`).first().waitFor({ timeout });
    }
    // The member list shows everyone in the lobby.
    await page.locator("#members").getByText("tcpbob").waitFor({ timeout });
  }
  await pages[0][1].screenshot({ path: screenshot });
  console.log("done");
  await browser.close();
  process.exit(0);
} catch (error) {
  console.error(`the chat page failed: ${error}`);
  await browser.close();
  process.exit(1);
}
