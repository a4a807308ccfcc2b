// Live alerts: new notifications arrive as server-sent events, newest on top. Without
// JavaScript the page still lists the alerts as of its loading.
document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("alerts");
  if (!list || !window.EventSource) return;
  const url = "/events?after=" + encodeURIComponent(list.dataset.after || "");
  const source = new EventSource(url);
  const live = document.getElementById("live");
  source.addEventListener("open", () => live && live.classList.remove("dim"));
  source.addEventListener("error", () => live && live.classList.add("dim"));
  source.addEventListener("alert", (event) => {
    list.insertAdjacentHTML("afterbegin", event.data);
    const empty = document.getElementById("no-alerts");
    if (empty) empty.remove();
  });
  source.addEventListener("waiting", (event) => {
    const count = document.getElementById("waiting");
    if (!count) return;
    count.textContent = event.data;
    count.closest(".banner").hidden = event.data === "0";
  });
});
