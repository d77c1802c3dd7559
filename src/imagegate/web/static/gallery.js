// Optional: a Copy button for the link page. Without JavaScript the link is still
// there to select and copy by hand.
"use strict";
const button = document.getElementById("copy");
if (button && navigator.clipboard) {
  const field = document.getElementById(button.dataset.target);
  const status = document.getElementById("copied");
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      status.textContent = "Copied.";
    } catch {
      field.select();
      status.textContent = "Select the link and copy it.";
    }
  });
}
