// A little help where it matters; every page works without it.
document.addEventListener("DOMContentLoaded", () => {
  // Ask once more before an action that re-processes a delivery.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // "Select all" for the bulk actions.
  for (const box of document.querySelectorAll("input.select-all")) {
    box.addEventListener("change", () => {
      const table = box.closest("table");
      for (const other of table.querySelectorAll("input[type=checkbox][name]")) other.checked = box.checked;
    });
  }
});
