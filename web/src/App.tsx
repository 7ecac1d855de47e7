import { lazy, Suspense } from "react";
import { Navigate, Route, Routes } from "react-router";
import { useAuth } from "./auth";
import { Layout } from "./components/Layout";
import { Loading, NotFound } from "./components/Status";
import { DatasetPage } from "./pages/DatasetPage";
import { DatasetsPage } from "./pages/DatasetsPage";
import { JobPage } from "./pages/JobPage";
import { JobsPage } from "./pages/JobsPage";
import { LoginPage } from "./pages/LoginPage";
import { ModelPage } from "./pages/ModelPage";
import { ModelsPage } from "./pages/ModelsPage";
import { RunPage } from "./pages/RunPage";

// Monaco is large: the editor page loads it only when opened.
const EditorPage = lazy(() => import("./pages/EditorPage"));

export function App() {
  const { status } = useAuth();
  if (status === "checking") return <Loading what="Starting" />;
  if (status === "anonymous") return <LoginPage />;
  return (
    <Routes>
      <Route element={<Layout />}>
        <Route index element={<Navigate to="/datasets" replace />} />
        <Route path="datasets" element={<DatasetsPage />} />
        <Route path="datasets/:ref" element={<DatasetPage />} />
        <Route path="datasets/:ref/edit"
               element={<Suspense fallback={<Loading what="Opening the editor" />}>
                 <EditorPage />
               </Suspense>} />
        <Route path="run" element={<RunPage />} />
        <Route path="jobs" element={<JobsPage />} />
        <Route path="jobs/:id" element={<JobPage />} />
        <Route path="models" element={<ModelsPage />} />
        <Route path="models/:name" element={<ModelPage />} />
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  );
}
