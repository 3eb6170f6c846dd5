-- plugin/omixa.lua — the commands of examples/nvim (Neovim 0.7+).
if vim.g.loaded_omixa then return end
vim.g.loaded_omixa = true

vim.api.nvim_create_user_command("OmixaGenerate", function(opts)
  local ok, err = pcall(require("omixa_nvim").generate, opts.args)
  if not ok then vim.notify(tostring(err), vim.log.levels.ERROR) end
end, { nargs = "+", desc = "Generate an image in the background (omixa)" })

vim.api.nvim_create_user_command("OmixaCancel", function()
  vim.notify(("omixa: cancelled %d job(s)"):format(require("omixa_nvim").cancel()))
end, { nargs = 0, desc = "Cancel the running omixa jobs" })

vim.api.nvim_create_autocmd("VimLeavePre", {
  callback = function()
    if package.loaded.omixa_nvim then require("omixa_nvim").close() end
  end,
})
