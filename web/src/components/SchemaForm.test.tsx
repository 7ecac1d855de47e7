import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { fieldsOf, initialValues } from "../lib/schemaForm";
import { SchemaForm } from "./SchemaForm";

const fields = fieldsOf({
  required: ["model_name"],
  properties: {
    model_name: { type: "string", title: "Model Name", description: "Registry name" },
    batch_size: { type: "integer", title: "Batch Size", default: 16, minimum: 1 },
    padding: { type: "string", title: "Padding", enum: ["longest", "max_length"],
      default: "longest" },
  },
});

describe("SchemaForm", () => {
  it("labels every control and describes it", () => {
    render(<SchemaForm fields={fields} values={initialValues(fields)} errors={{}}
                       onChange={() => undefined} />);
    const name = screen.getByLabelText(/Model Name/);
    expect(name.getAttribute("aria-describedby")).toBe("param-model_name-help");
    expect(screen.getByText("Registry name").id).toBe("param-model_name-help");
    expect((screen.getByLabelText(/Batch Size/) as HTMLInputElement).value).toBe("16");
    expect(screen.getByLabelText(/Padding/).tagName).toBe("SELECT");
  });

  it("shows the server's message next to its field and opens the optional ones", () => {
    render(<SchemaForm fields={fields} values={initialValues(fields)}
                       errors={{ batch_size: "Input should be greater than or equal to 1" }}
                       onChange={() => undefined} />);
    const input = screen.getByLabelText(/Batch Size/);
    expect(input.getAttribute("aria-invalid")).toBe("true");
    const error = screen.getByRole("alert");
    expect(error.textContent).toBe("Input should be greater than or equal to 1");
    expect(input.getAttribute("aria-describedby")).toContain(error.id);
    expect(screen.getByText(/1 to fix/)).toBeTruthy();
    expect((input.closest("details") as HTMLDetailsElement).open).toBe(true);
  });

  it("reports what the user types", async () => {
    const onChange = vi.fn();
    render(<SchemaForm fields={fields} values={initialValues(fields)} errors={{}}
                       onChange={onChange} />);
    await userEvent.type(screen.getByLabelText(/Model Name/), "m");
    expect(onChange).toHaveBeenLastCalledWith("model_name", "m");
  });
});
